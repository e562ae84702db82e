package coqa_test

import (
	"fmt"
	"os"
	"path/filepath"

	"qllama/eval/coqa"
)

// Scoring a predictions file with no model, as `qinfer eval coqa score` does.
func ExampleScoreFile() {
	dir, _ := os.MkdirTemp("", "coqa-example")
	defer os.RemoveAll(dir)
	data := filepath.Join(dir, "synthetic.json")
	ds := coqa.Synthesize(1, 3)
	if err := coqa.WriteDataset(data, ds); err != nil {
		fmt.Println(err)
		return
	}
	// Official format: answer every turn with its first gold answer.
	var preds string
	for _, s := range ds.Stories {
		for i, q := range s.Questions {
			if preds != "" {
				preds += ","
			}
			preds += fmt.Sprintf("{%q:%q,%q:%d,%q:%q}", "id", s.ID, "turn_id", q.TurnID, "answer", s.Answers[i].InputText)
		}
	}
	predPath := filepath.Join(dir, "preds.json")
	os.WriteFile(predPath, []byte("["+preds+"]"), 0o644)
	res, err := coqa.ScoreFile(data, predPath, "official")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%s: %+v\n", res.Protocol, res.Official.Overall)
	// Output: all-turns: {EM:100 F1:100 Turns:18}
}
