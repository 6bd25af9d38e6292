package main

// Ogg/Opus reading (RFC 3533 pages, RFC 7845 Opus mapping): the caller's pre-encoded
// audio as Opus packets, each with its duration from its TOC byte (RFC 6716 3.1).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"time"
)

type opusPacket struct {
	data []byte
	at   time.Duration // position of the packet's first sample, pre-skip removed
	dur  time.Duration
}

// readOggOpus returns the audio packets of an Ogg/Opus file (the OpusHead and OpusTags
// header packets left out).
func readOggOpus(path string) ([]opusPacket, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var packets [][]byte
	var partial []byte
	for off := 0; off < len(raw); {
		if len(raw)-off < 27 || string(raw[off:off+4]) != "OggS" {
			return nil, fmt.Errorf("%s: not an Ogg page at byte %d", path, off)
		}
		nseg := int(raw[off+26])
		if len(raw)-off < 27+nseg {
			return nil, fmt.Errorf("%s: truncated page at byte %d", path, off)
		}
		lacing := raw[off+27 : off+27+nseg]
		body := off + 27 + nseg
		for _, l := range lacing {
			if body+int(l) > len(raw) {
				return nil, fmt.Errorf("%s: truncated page body at byte %d", path, body)
			}
			partial = append(partial, raw[body:body+int(l)]...)
			body += int(l)
			if l < 255 { // a lacing value under 255 ends a packet
				packets = append(packets, partial)
				partial = nil
			}
		}
		off = body
	}
	if len(packets) < 2 || len(packets[0]) < 19 || string(packets[0][:8]) != "OpusHead" {
		return nil, fmt.Errorf("%s: no OpusHead: not an Ogg/Opus file", path)
	}
	preSkip := time.Duration(binary.LittleEndian.Uint16(packets[0][10:12])) * time.Second / 48000
	out := make([]opusPacket, 0, len(packets)-2)
	pos := -preSkip
	for _, p := range packets[2:] {
		d, err := packetDuration(p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out = append(out, opusPacket{data: p, at: pos, dur: d})
		pos += d
	}
	return out, nil
}

// frameSizes: the frame duration of each TOC configuration (RFC 6716 table 2), in
// units of 1/400 s (2.5 ms).
var frameSizes = [32]int{
	4, 8, 16, 24, 4, 8, 16, 24, 4, 8, 16, 24, // SILK NB, MB, WB: 10, 20, 40, 60 ms
	4, 8, 4, 8, // hybrid SWB, FB: 10, 20 ms
	1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, 1, 2, 4, 8, // CELT: 2.5, 5, 10, 20 ms
}

func packetDuration(p []byte) (time.Duration, error) {
	if len(p) == 0 {
		return 0, errors.New("empty Opus packet")
	}
	frames := 1
	switch p[0] & 3 {
	case 1, 2:
		frames = 2
	case 3:
		if len(p) < 2 {
			return 0, errors.New("Opus code 3 packet without a frame count")
		}
		frames = int(p[1] & 0x3f)
	}
	return time.Duration(frameSizes[p[0]>>3]*frames) * time.Second / 400, nil
}
