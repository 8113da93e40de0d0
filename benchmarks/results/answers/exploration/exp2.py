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
name = sys.argv[1]; n = int(sys.argv[2]); SL = int(sys.argv[3])
bench = load_set(f'../shared/data/{name}', limit=30, seed=0)
cache = json.load(open(f'benchmarks/results/answers/retrieval_{name}.json'))
lm = load_causal_lm(None)
gen = LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
prompts = get_prompts('en')
rules = ['sum', 'mean', 'pmi', 'pmimean', 'first']
tot = {r: [0, 0] for r in rules}
qs = [q for q in bench.questions if q.id in cache and not sa.is_yes_no(q.question)][:n]
T = 0
for q in qs:
    ps = tuple(ScoredPassage(Passage(p['id'], p['text'], {'doc_id': p['doc_id']}), 1.0) for p in cache[q.id]['passages'])
    plain = [p.passage for p in ps]
    t = time.perf_counter()
    spans = sa._choices(plain, q.question) or sa.candidate_spans(plain, q.question)
    ctx = format_passages(ps)
    sc = PromptScorer(gen, prompts.short_answer.format(context=ctx, question=q.question))
    null = PromptScorer(gen, prompts.short_answer.format(context=ctx, question='N/A'))
    ends = sa._end_ids(gen, sc)
    toks = [sc.encode(s.text) for s in spans]
    order = sorted(range(len(spans)), key=lambda i: -sc.first_logprob(toks[i]))[:SL]
    A = sc.score([toks[i] for i in order], ends); B = null.score([toks[i] for i in order], ends)
    res = {}
    for j, i in enumerate(order):
        a, b, k = A[j], B[j], len(toks[i])
        res[i] = dict(sum=a, mean=a/(k+1), pmi=a-b, pmimean=(a-b)/(k+1), first=-j)
    T += time.perf_counter() - t
    row = [q.question[:60], q.answers[0][:25]]
    for r in rules:
        best = max(res, key=lambda i: res[i][r]); text = spans[best].text
        tot[r][0] += exact_match(text, q.answers); tot[r][1] += token_f1(text, q.answers)
        row.append(f'{r}:{text[:30]!r}')
    print(' | '.join(row), flush=True)
for r, (em, f1) in tot.items():
    print(f'{r}: EM {em/len(qs):.3f} F1 {f1/len(qs):.3f}')
print('s/q', T/len(qs), 'cands', len(spans))
