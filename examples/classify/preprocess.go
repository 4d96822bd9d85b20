package main

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/color"
	stddraw "image/draw"
	_ "image/jpeg" // registers the decoders image.Decode uses
	_ "image/png"
	"math"

	"golang.org/x/image/draw"
)

// Preprocessing of the orientation model's training pipeline: scale the short side to
// 256, centre-crop 224x224, channels in B,G,R order, (x/255 - mean) / std, NCHW.
const (
	inputSize = 224
	shortSide = 256
)

var (
	mean = [3]float32{0.485, 0.456, 0.406} // applied to B, G, R in that order
	std  = [3]float32{0.229, 0.224, 0.225}
)

// maxPixels bounds the decoded image so a small file cannot expand into a memory bomb.
const maxPixels = 30_000_000

var errNotImage = errors.New("not a JPEG or PNG image")

type tooManyPixelsError struct{ width, height int }

func (e *tooManyPixelsError) Error() string {
	return fmt.Sprintf("image is %dx%d pixels; at most %d megapixels are accepted", e.width, e.height, maxPixels/1_000_000)
}

// decode reads a JPEG or PNG, refusing oversized dimensions before allocating pixels.
func decode(data []byte) (image.Image, string, error) {
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		return nil, "", errNotImage
	}
	if cfg.Width <= 0 || cfg.Height <= 0 || int64(cfg.Width)*int64(cfg.Height) > maxPixels {
		return nil, "", &tooManyPixelsError{cfg.Width, cfg.Height}
	}
	img, _, err := image.Decode(bytes.NewReader(data))
	if err != nil {
		return nil, "", fmt.Errorf("the %s image is damaged: %w", format, err)
	}
	return img, format, nil
}

// cropRect is the part of src that ends up in the centre 224x224 crop after the short
// side is scaled to 256; scaling only this part gives the same pixels without
// allocating the whole scaled image (which a 1x10000 picture would make huge).
func cropRect(b image.Rectangle) image.Rectangle {
	w, h := b.Dx(), b.Dy()
	side := float64(min(w, h)) * inputSize / shortSide
	cw := max(1, int(math.Round(side)))
	x0 := b.Min.X + int(math.Round((float64(w)-side)/2))
	y0 := b.Min.Y + int(math.Round((float64(h)-side)/2))
	return image.Rect(x0, y0, x0+cw, y0+cw)
}

// toTensor turns a decoded image into the model's 1x3x224x224 input.
func toTensor(img image.Image) []float32 {
	rgba := image.NewRGBA(image.Rect(0, 0, inputSize, inputSize))
	op := draw.Src // the scaler's fast paths (YCbCr, Gray, RGBA sources) are for Src
	if o, ok := img.(interface{ Opaque() bool }); !ok || !o.Opaque() {
		// Transparent pixels count as white paper, the background text pictures have.
		stddraw.Draw(rgba, rgba.Bounds(), image.NewUniform(color.White), image.Point{}, stddraw.Src)
		op = draw.Over
	}
	draw.CatmullRom.Scale(rgba, rgba.Bounds(), img, cropRect(img.Bounds()), op, nil)

	const plane = inputSize * inputSize
	out := make([]float32, 3*plane)
	for y := 0; y < inputSize; y++ {
		row := rgba.Pix[y*rgba.Stride:]
		for x := 0; x < inputSize; x++ {
			px := row[x*4:]
			i := y*inputSize + x
			for c, v := range [3]uint8{px[2], px[1], px[0]} { // B, G, R
				out[c*plane+i] = (float32(v)/255 - mean[c]) / std[c]
			}
		}
	}
	return out
}
