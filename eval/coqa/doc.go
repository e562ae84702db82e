// Package coqa evaluates language models on CoQA (Reddy et al., 2019) the way
// the reference implementations do, so that numbers are comparable with
// published ones. The exact specification is ../../../shared/docs/coqa.md.
//
// Two protocols are provided and named in every result:
//
//   - ProtocolLMEval ("lmeval") reproduces the lm-evaluation-harness task
//     "coqa" v3.0: only the last turn of every story is asked, with the gold
//     history of the previous turns in the prompt; the gold list is the
//     case-insensitively de-duplicated answer list; scores are means in [0,1].
//   - ProtocolAllTurns ("all-turns") asks every turn with the same prompt
//     format (gold history) and scores like the official evaluate-v1.0.py:
//     four gold answers per turn without de-duplication, per-domain and
//     in/out/overall percentages rounded like Python's round(x, 1).
//
// Answer normalisation follows SQuAD's normalize_answer with Python string
// semantics (see Normalize). Predictions that already exist can be scored
// without a model (ScoreOfficial, ScoreLMEval, ScoreFile); Run drives a model
// through the small Tokenizer and Generator interfaces defined here, batching
// requests by story so that turns of one story share their prompt prefix.
package coqa
