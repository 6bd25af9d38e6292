package main

// #cgo pkg-config: opus
// #include <opus.h>
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

// decoder decodes the agent's Opus packets to 48 kHz mono, only while a turn's reply is
// awaited (libopus through cgo; the rest of the call never decodes).
type decoder struct {
	st  *C.OpusDecoder
	pcm []int16
}

func newDecoder() (*decoder, error) {
	var errc C.int
	st := C.opus_decoder_create(48000, 1, &errc)
	if errc != C.OPUS_OK {
		return nil, fmt.Errorf("opus_decoder_create: %d", int(errc))
	}
	return &decoder{st: st, pcm: make([]int16, 5760)}, nil
}

// rms decodes one packet and returns its RMS (full scale 1.0).
func (d *decoder) rms(packet []byte) float64 {
	if len(packet) == 0 {
		return 0
	}
	n := C.opus_decode(d.st, (*C.uchar)(unsafe.Pointer(&packet[0])), C.opus_int32(len(packet)),
		(*C.opus_int16)(unsafe.Pointer(&d.pcm[0])), C.int(len(d.pcm)), 0)
	if n <= 0 {
		return 0
	}
	var sum float64
	for _, s := range d.pcm[:n] {
		v := float64(s) / 32768.0
		sum += v * v
	}
	return math.Sqrt(sum / float64(n))
}

func (d *decoder) close() { C.opus_decoder_destroy(d.st) }
