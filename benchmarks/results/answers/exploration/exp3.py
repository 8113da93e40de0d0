import json, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, '.')
from benchmarks.datasets import load_set
from benchmarks.metrics import exact_match, token_f1
from shared_core.models.loading import load_causal_lm
from shared_core.models.generation import LocalGenerator, format_passages
from shared_core.models.span_scoring import PromptScorer
from shared_core.prompts import get_prompts
from shared_core import short_answers as sa
from shared_core.types import Passage, ScoredPassage
name = sys.argv[1]; n = int(sys.argv[2]); SL = int(sys.argv[3]); off = int(sys.argv[4]) if len(sys.argv) > 4 else 0
bench = load_set(f'../shared/data/{name}', limit=30, seed=0)
cache = json.load(open(f'benchmarks/results/answers/retrieval_{name}.json'))
lm = load_causal_lm(None)
gen = LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
prompts = get_prompts('en')
rules = {'prior': lambda p, a, k: p, 'mean': lambda p, a, k: a/(k+1), 'mean+prior': lambda p, a, k: a/(k+1) + p,
         'mean+2prior': lambda p, a, k: a/(k+1) + 2*p, 'sum+prior': lambda p, a, k: a + p, 'sum+3prior': lambda p, a, k: a + 3*p}
tot = {r: [0, 0] for r in rules}
qs = [q for q in bench.questions if q.id in cache and not sa.is_yes_no(q.question)][off:off+n]
T = 0
for q in qs:
    ps = tuple(ScoredPassage(Passage(p['id'], p['text'], {'doc_id': p['doc_id']}), 1.0) for p in cache[q.id]['passages'])
    plain = [p.passage for p in ps]
    t = time.perf_counter()
    spans = sa._choices(plain, q.question) or sa.candidate_spans(plain, q.question)
    sc = PromptScorer(gen, prompts.short_answer.format(context=format_passages(ps), question=q.question))
    ends = sa._end_ids(gen, sc)
    toks = [sc.encode(s.text) for s in spans]
    order = sorted(range(len(spans)), key=lambda i: -spans[i].prior)[:SL]
    A = sc.score([toks[i] for i in order], ends)
    T += time.perf_counter() - t
    row = [q.question[:50], q.answers[0][:25]]
    for r, f in rules.items():
        best = max(range(len(order)), key=lambda j: f(spans[order[j]].prior, A[j], len(toks[order[j]])))
        text = spans[order[best]].text
        tot[r][0] += exact_match(text, q.answers); tot[r][1] += token_f1(text, q.answers)
        row.append(f'{r}:{text[:25]!r}')
    print(' | '.join(row), flush=True)
for r, (em, f1) in tot.items():
    print(f'{r}: EM {em/len(qs):.3f} F1 {f1/len(qs):.3f}')
print('s/q', T/len(qs))
