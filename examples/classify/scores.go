package main

import (
	"math"
	"sort"
	"strconv"
)

// Label is one class of the model with its probability.
type Label struct {
	Label string  `json:"label"`
	Score float64 `json:"score"`
	// Degrees is the class read as a clockwise turn, when the label is a number of degrees.
	Degrees *int `json:"degrees,omitempty"`
}

// probabilities returns out as a distribution: models that end in Softmax already give
// one (all in [0,1], summing to 1) and must not be squashed a second time.
func probabilities(out []float32) []float64 {
	p := make([]float64, len(out))
	sum := 0.0
	isDist := true
	for i, v := range out {
		p[i] = float64(v)
		sum += p[i]
		if v < 0 || v > 1 || math.IsNaN(float64(v)) {
			isDist = false
		}
	}
	if isDist && math.Abs(sum-1) < 1e-3 {
		return p
	}
	maxV := math.Inf(-1)
	for _, v := range p {
		maxV = math.Max(maxV, v)
	}
	sum = 0
	for i, v := range p {
		p[i] = math.Exp(v - maxV)
		sum += p[i]
	}
	for i := range p {
		p[i] /= sum
	}
	return p
}

// ranked pairs scores with labels, highest first.
func ranked(names []string, probs []float64) []Label {
	labels := make([]Label, len(probs))
	for i, p := range probs {
		if i >= len(names) { // unnamed class: its index, with no meaning attached
			labels[i] = Label{Label: "class " + strconv.Itoa(i), Score: p}
			continue
		}
		labels[i] = Label{Label: names[i], Score: p}
		if d, err := strconv.Atoi(names[i]); err == nil {
			labels[i].Degrees = &d
		}
	}
	sort.SliceStable(labels, func(a, b int) bool { return labels[a].Score > labels[b].Score })
	return labels
}
