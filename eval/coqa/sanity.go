package coqa

import (
	"context"
	"fmt"
	"io"
	"strings"
)

// SanityStories is the number of stories Sanity evaluates.
const SanityStories = 3

// sanityTail is how many characters of each prompt Sanity prints.
const sanityTail = 200

// Sanity runs Run on the first SanityStories stories of ds (or fewer if
// opt.Limit is smaller) and prints, for every question, the tail of the
// prompt, the raw output, the cleaned prediction and the gold answers side by
// side with EM/F1, so a human can spot a broken prompt, tokenizer or stop
// handling before a long run. The result is returned as well.
func Sanity(ctx context.Context, ds *Dataset, tok Tokenizer, gen Generator, opt Options, w io.Writer) (*Result, error) {
	if len(ds.Stories) == 0 {
		return nil, errNoStories
	}
	if opt.Limit <= 0 || opt.Limit > SanityStories {
		opt.Limit = SanityStories
	}
	res, err := Run(ctx, ds, tok, gen, opt)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*Story)
	for i := range ds.Stories[:opt.Limit] {
		if _, ok := byID[ds.Stories[i].ID]; !ok {
			byID[ds.Stories[i].ID] = &ds.Stories[i]
		}
	}
	for _, p := range res.Predictions {
		fmt.Fprintf(w, "=== %s turn %d (%s), prompt %d tokens", p.ID, p.TurnID, res.Protocol, p.PromptTokens)
		if p.Truncated {
			fmt.Fprintf(w, ", truncated from %d", p.PromptTokensFull)
		}
		fmt.Fprintln(w)
		if s := byID[p.ID]; s != nil {
			for t, q := range s.Questions {
				if q.TurnID == p.TurnID {
					fmt.Fprintf(w, "prompt tail: %q\n", tail(Prompt(s, t), sanityTail))
					break
				}
			}
		}
		fmt.Fprintf(w, "raw:   %q\n", p.Raw)
		fmt.Fprintf(w, "pred:  %-40q | golds: %s | em %.3f f1 %.3f\n", p.Prediction, quoteList(p.Golds), p.EM, p.F1)
	}
	fmt.Fprintf(w, "--- %s on %d stories: n %d, em %.4f, f1 %.4f\n", res.Protocol, res.Dataset.Stories, res.N, res.EM, res.F1)
	return res, nil
}

// tail returns the last n runes of s, prefixed with "…" when cut.
func tail(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return "…" + string(r[len(r)-n:])
}

func quoteList(l []string) string {
	q := make([]string, len(l))
	for i, s := range l {
		q[i] = fmt.Sprintf("%q", s)
	}
	return "[" + strings.Join(q, ", ") + "]"
}
