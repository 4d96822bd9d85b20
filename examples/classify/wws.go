package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
)

// request is what the server writes to the worker's stdin (the wws protocol).
type request struct {
	URL     string            `json:"url"`
	Method  string            `json:"method"`
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
	// Base64 is set when Body holds base64 of the raw bytes, as binary uploads do.
	Base64 bool              `json:"base64"`
	Params map[string]string `json:"params"`
}

// response is what the worker writes to stdout.
type response struct {
	Data    string            `json:"data"`
	Headers map[string]string `json:"headers"`
	Status  int               `json:"status"`
	KV      map[string]string `json:"kv"`
	Base64  bool              `json:"base64"`
}

func readRequest(r io.Reader) (*request, error) {
	var req request
	if err := json.NewDecoder(r).Decode(&req); err != nil {
		return nil, fmt.Errorf("reading the request: %w", err)
	}
	return &req, nil
}

// bodyBytes returns the raw request body.
func (r *request) bodyBytes() ([]byte, error) {
	if !r.Base64 {
		return []byte(r.Body), nil
	}
	b, err := base64.StdEncoding.DecodeString(r.Body)
	if err != nil {
		return nil, fmt.Errorf("request body is not valid base64: %w", err)
	}
	return b, nil
}

func writeJSON(status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status, data = 500, []byte(`{"error":"cannot encode the answer"}`)
	}
	out, _ := json.Marshal(response{
		Data:    string(data),
		Headers: map[string]string{"content-type": "application/json", "cache-control": "no-store"},
		Status:  status,
		KV:      map[string]string{},
	})
	os.Stdout.Write(out)
}

// apiError is the body of every 4xx/5xx answer, shaped like the server's own errors:
// a kind for programs and a sentence for people.
type apiError struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

func fail(status int, kind, format string, args ...any) {
	writeJSON(status, apiError{Error: kind, Message: fmt.Sprintf(format, args...)})
}
