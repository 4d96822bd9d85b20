package main

import (
	"bytes"
	"unicode/utf8"
)

var signatures = []struct {
	at    int
	magic string
	name  string
}{
	{0, "GIF8", "a GIF image"},
	{8, "WEBP", "a WebP image"},
	{0, "BM", "a BMP image"},
	{0, "II*\x00", "a TIFF image"},
	{0, "MM\x00*", "a TIFF image"},
	{4, "ftypheic", "a HEIC image"},
	{4, "ftypavif", "an AVIF image"},
	{0, "%PDF-", "a PDF document"},
	{0, "PK\x03\x04", "a ZIP archive"},
	{0, "<svg", "an SVG drawing"},
}

// describe names what an upload looks like, so the error can say what was sent instead.
func describe(data []byte) string {
	for _, s := range signatures {
		if len(data) >= s.at+len(s.magic) && string(data[s.at:s.at+len(s.magic)]) == s.magic {
			return "it looks like " + s.name
		}
	}
	head := data[:min(len(data), 512)]
	if utf8.Valid(head) && !bytes.ContainsRune(head, 0) {
		return "it looks like text"
	}
	return "unrecognised data"
}
