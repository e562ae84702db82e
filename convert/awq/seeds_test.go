package awq

import (
	"context"
	"flag"
	"strings"
	"testing"

	"qllama/convert/calib"
	"qllama/infer"
	"qllama/internal/testmodel"
)

var seedSweep = flag.Int("awq-seeds", 0, "TestHeldOutSeeds: how many calibration / held-out seed pairs (about 10 s each)")

// TestHeldOutSeeds repeats TestModelBeatsRTN's held-out comparison of q_proj,
// k_proj and the attention output over further calibration / held-out
// draws (seeds k and k+100 for k = 1..-awq-seeds), for the reference walk
// (ReferenceQK) and the default one, and logs how often AWQ is not below
// RTN: the measurements quoted in the package doc. It asserts nothing.
func TestHeldOutSeeds(t *testing.T) {
	if *seedSweep <= 0 {
		t.Skip("needs -awq-seeds N")
	}
	text := testmodel.CalibText(t)
	for _, ref := range []bool{true, false} {
		var qkAbove, qkN, attAbove, attN int
		var qkWorst, attWorst, attSum float64
		for seed := uint64(1); seed <= uint64(*seedSweep); seed++ {
			for _, c := range beatsRTNCases {
				m, tok := testmodel.Load(t, c.model)
				_, toks, err := calib.Read(context.Background(), strings.NewReader(text), tok, 0, false)
				if err != nil {
					t.Fatal(err)
				}
				cs, err := calib.FromTokens(toks, tok.BOS(), calib.Options{Samples: 12, SeqLen: 48, Seed: seed})
				if err != nil {
					t.Fatal(err)
				}
				hs, err := calib.FromTokens(toks, tok.BOS(), calib.Options{Samples: 4, SeqLen: 48, Seed: seed + 100})
				if err != nil {
					t.Fatal(err)
				}
				o := c.opt
				o.ReferenceQK = ref
				res, _, err := QuantizeModel(context.Background(), m, cs, ModelOptions{Options: o})
				if err != nil {
					t.Fatal(err)
				}
				eff := effectiveModel(t, m, res)
				xe, err := calib.Embed(m, hs)
				if err != nil {
					t.Fatal(err)
				}
				var ae infer.BlockActivations
				for l := range m.Layers {
					if err := infer.BlockForward(&m.Config, &eff.Layers[l], xe, len(hs.Samples), hs.Info.SeqLen, &ae); err != nil {
						t.Fatal(err)
					}
					lin, ea, er := blockHeldOut(t, m, eff, res, l, &ae, hs, c.opt)
					for _, e := range lin[:2] { // q_proj, k_proj
						qkN++
						qkWorst = max(qkWorst, e.awq/e.rtn)
						if !(e.awq < e.rtn) {
							qkAbove++
						}
					}
					attN++
					attSum += ea / er
					attWorst = max(attWorst, ea/er)
					if !(ea < er) {
						attAbove++
					}
				}
			}
		}
		t.Logf("ReferenceQK %v: q/k not below RTN in %d of %d (worst ratio %.3f); attention output in %d of %d (worst %.3f, mean %.3f)",
			ref, qkAbove, qkN, qkWorst, attAbove, attN, attWorst, attSum/float64(attN))
	}
}
