package coqa

import (
	"fmt"
	"math/rand/v2"
	"strings"
)

// Word lists for Synthesize, in the simple style of TinyStories.
var (
	synthNames   = []string{"Lily", "Tom", "Mia", "Ben", "Sue", "Max", "Anna", "Sam"}
	synthColors  = []string{"red", "blue", "green", "yellow", "pink", "purple"}
	synthToys    = []string{"ball", "kite", "car", "doll", "boat", "drum"}
	synthPlaces  = []string{"park", "beach", "garden", "farm", "lake", "forest"}
	synthAnimals = []string{"dog", "cat", "bunny", "duck", "puppy", "frog"}
	synthPets    = []string{"Spot", "Fluffy", "Buddy", "Daisy", "Rex", "Coco"}
	synthThings  = []string{"a big tree", "a little bird", "a shiny rock", "a red flower", "a funny bug", "a tall slide"}
	synthFoods   = []string{"cookies", "apples", "soup", "cake", "bread", "pie"}
	synthSources = []string{"mctest", "gutenberg", "race", "cnn", "wikipedia"}
)

// Synthesize generates a CoQA-format dataset of simple stories
// deterministically from seed (the same seed and count always give the same
// dataset, on every platform). Each story has 5 to 7 turns with four gold
// answers per turn (answer plus additional_answers "0", "1", "2") including
// case variants, duplicates, yes/no and "unknown" answers, and sources spread
// over the five dev domains. It is meant for demos and tests that must not
// download the real dev file.
func Synthesize(seed int64, stories int) *Dataset {
	rng := rand.New(rand.NewPCG(uint64(seed), 0x636f7161)) // "coqa"
	pick := func(l []string) string { return l[rng.IntN(len(l))] }
	ds := &Dataset{Version: "1.0", Stories: make([]Story, 0, max(0, stories))}
	for i := range max(0, stories) {
		name := pick(synthNames)
		friend := pick(synthNames)
		for friend == name {
			friend = pick(synthNames)
		}
		color, toy, place := pick(synthColors), pick(synthToys), pick(synthPlaces)
		animal, pet, thing, food := pick(synthAnimals), pick(synthPets), pick(synthThings), pick(synthFoods)
		she, her := "she", "her"
		if rng.IntN(2) == 0 {
			she, her = "he", "his"
		}
		friendCame := rng.IntN(2) == 0
		text := fmt.Sprintf("%s had a %s %s. One day, %s went to the %s with %s, %s %s. At the %s, %s saw %s.",
			name, color, toy, she, place, pet, her, animal, place, name, thing)
		if friendCame {
			text += fmt.Sprintf(" %s came to play too.", friend)
		} else {
			text += fmt.Sprintf(" %s could not come to play.", friend)
		}
		text += fmt.Sprintf(" After playing, they went home and ate %s. %s was very happy.", food, name)
		yesNo := "no"
		if friendCame {
			yesNo = "yes"
		}
		// Each turn: question and the four gold answers (answer first).
		turns := []struct {
			q     string
			golds [4]string
			span  string
		}{
			{fmt.Sprintf("Who had a %s %s?", color, toy), [4]string{name, name, strings.ToLower(name), name + "."}, name},
			{"What color was it?", [4]string{color, color, "it was " + color, strings.ToUpper(color[:1]) + color[1:]}, color},
			{fmt.Sprintf("Where did %s go?", she), [4]string{"to the " + place, "the " + place, "to the " + place, place}, "to the " + place},
			{fmt.Sprintf("Who went with %s?", map[string]string{"she": "her", "he": "him"}[she]), [4]string{pet, her + " " + animal, pet, pet + ", " + her + " " + animal}, pet + ", " + her + " " + animal},
			{fmt.Sprintf("Did %s come to play?", friend), [4]string{yesNo, yesNo, strings.ToUpper(yesNo[:1]) + yesNo[1:], yesNo}, ""},
			{"What did they eat?", [4]string{food, food, "they ate " + food, food}, food},
			{"What was the weather like?", [4]string{"unknown", "unknown", "Unknown", "unknown"}, ""},
		}
		n := 5 + rng.IntN(3)
		st := Story{
			Source:   synthSources[rng.IntN(len(synthSources))],
			ID:       fmt.Sprintf("synth%04d%012x", i, rng.Uint64()>>16),
			Filename: fmt.Sprintf("synth-%d-%d.txt", seed, i),
			Story:    text,
			Name:     fmt.Sprintf("synth-%d-%d.txt", seed, i),
		}
		st.AdditionalAnswers = AnswerSets{{Key: "0"}, {Key: "1"}, {Key: "2"}}
		for t := range n {
			tr := turns[t]
			st.Questions = append(st.Questions, Question{InputText: tr.q, TurnID: t + 1})
			mk := func(input string) Answer {
				a := Answer{SpanStart: -1, SpanEnd: -1, SpanText: "unknown", InputText: input, TurnID: t + 1}
				if tr.span != "" {
					if j := strings.Index(text, tr.span); j >= 0 {
						a.SpanStart, a.SpanEnd, a.SpanText = j, j+len(tr.span), tr.span
					}
				}
				return a
			}
			st.Answers = append(st.Answers, mk(tr.golds[0]))
			for k := range st.AdditionalAnswers {
				st.AdditionalAnswers[k].Answers = append(st.AdditionalAnswers[k].Answers, mk(tr.golds[k+1]))
			}
		}
		ds.Stories = append(ds.Stories, st)
	}
	return ds
}
