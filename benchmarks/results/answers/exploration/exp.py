import json, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, '.')
from benchmarks.datasets import load_set
from benchmarks.metrics import exact_match, token_f1
from shared_core.models.loading import load_causal_lm
from shared_core.models.generation import LocalGenerator, format_passages
from shared_core.prompts import get_prompts
from shared_core.short_answers import SpanScoring, SpanDecoding
from shared_core.types import Passage, ScoredPassage
name = sys.argv[1]; n = int(sys.argv[2]); methods = sys.argv[3].split(',')
bench = load_set(f'../shared/data/{name}', limit=30, seed=0)
cache = json.load(open(f'benchmarks/results/answers/retrieval_{name}.json'))
lm = load_causal_lm(None)
gen = LocalGenerator(lm.model, lm.tokenizer, name=lm.name)
prompts = get_prompts('en')
M = {'score': SpanScoring(), 'norm': SpanScoring(length_norm=True), 'decode': SpanDecoding(), 'score12': SpanScoring(shortlist=12)}
tot = {m: [0, 0, 0] for m in methods}
qs = [q for q in bench.questions if q.id in cache][:n]
for q in qs:
    ps = tuple(ScoredPassage(Passage(p['id'], p['text'], {'doc_id': p['doc_id']}), 1.0) for p in cache[q.id]['passages'])
    row = [q.question[:70], q.answers[0][:30]]
    for m in methods:
        t = time.perf_counter()
        if m == 'free':
            text = gen.generate(prompts.answer.format(context=format_passages(ps), question=q.question), max_new_tokens=64).text.strip()
        else:
            text = M[m].answer(gen, prompts, q.question, ps).text
        dt = time.perf_counter() - t
        tot[m][0] += exact_match(text, q.answers); tot[m][1] += token_f1(text, q.answers); tot[m][2] += dt
        row.append(f'{m}: {text[:50]!r} ({dt:.1f}s)')
    print(' | '.join(row), flush=True)
for m, (em, f1, t) in tot.items():
    print(f'{m}: EM {em/len(qs):.3f} F1 {f1/len(qs):.3f} s/ans {t/len(qs):.2f}')
