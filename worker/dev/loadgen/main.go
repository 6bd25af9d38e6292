// Command loadgen is voice-worker's low-CPU load generator for `voice-worker bench
// capacity`: N callers in N rooms, each dispatching the agent, joining with a token,
// publishing pre-encoded Opus turns (silence packets between) and timestamping the
// agent's RTP packets (decoded only while a reply is awaited). One JSON object on stdout.
//
// Usage: loadgen CONFIG.json (LIVEKIT_API_SECRET in the environment, never in the file).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// CallSpec is one caller: an Ogg/Opus file and the turns it speaks, in order.
type CallSpec struct {
	Audio      string       `json:"audio"`
	Turns      [][2]float64 `json:"turns"`       // (start, end) seconds in the file
	SpeechEnds []float64    `json:"speech_ends"` // per turn, seconds from its start to its last audible frame
}

type Config struct {
	URL           string     `json:"url"`      // ws://
	HTTPURL       string     `json:"http_url"` // http:// (server API)
	APIKey        string     `json:"api_key"`
	AgentName     string     `json:"agent_name"`
	Metadata      string     `json:"metadata"`
	EventsTopic   string     `json:"events_topic"`
	SpeechRMS     float64    `json:"speech_rms"`
	JoinTimeout   float64    `json:"join_timeout_s"`
	AnswerTimeout float64    `json:"answer_timeout_s"`
	Pause         float64    `json:"pause_s"`
	Tail          float64    `json:"tail_s"`
	Calls         []CallSpec `json:"calls"`
	apiSecret     string
}

type Output struct {
	Calls       []CallResult `json:"calls"`
	CPUSeconds  float64      `json:"cpu_seconds"`
	WallSeconds float64      `json:"wall_seconds"`
	MaxRSSMB    float64      `json:"max_rss_mb"`
}

func loadConfig(path string) (*Config, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var cfg Config
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg.apiSecret = os.Getenv("LIVEKIT_API_SECRET")
	switch {
	case cfg.URL == "" || cfg.HTTPURL == "":
		return nil, fmt.Errorf("%s: url and http_url are required", path)
	case cfg.APIKey == "" || cfg.apiSecret == "":
		return nil, fmt.Errorf("%s: api_key (and LIVEKIT_API_SECRET in the environment) are required", path)
	case cfg.AgentName == "":
		return nil, fmt.Errorf("%s: agent_name is required", path)
	case len(cfg.Calls) == 0:
		return nil, fmt.Errorf("%s: calls is empty", path)
	}
	for i, c := range cfg.Calls {
		if len(c.Turns) == 0 || len(c.SpeechEnds) != len(c.Turns) {
			return nil, fmt.Errorf("%s: calls[%d]: turns must be non-empty and speech_ends one per turn", path, i)
		}
	}
	return &cfg, nil
}

func cpuSeconds() (float64, float64) {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0, 0
	}
	tv := func(t syscall.Timeval) float64 { return float64(t.Sec) + float64(t.Usec)/1e6 }
	return tv(ru.Utime) + tv(ru.Stime), float64(ru.Maxrss) / 1024
}

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: loadgen CONFIG.json (LIVEKIT_API_SECRET in the environment)")
		os.Exit(2)
	}
	cfg, err := loadConfig(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	audio := map[string][]opusPacket{}
	for _, c := range cfg.Calls {
		if _, ok := audio[c.Audio]; !ok {
			if audio[c.Audio], err = readOggOpus(c.Audio); err != nil {
				fmt.Fprintln(os.Stderr, "loadgen:", err)
				os.Exit(2)
			}
		}
	}
	started := time.Now()
	cpu0, _ := cpuSeconds()
	calls := make([]*call, len(cfg.Calls))
	var wg sync.WaitGroup
	for i, spec := range cfg.Calls {
		c := &call{cfg: cfg, spec: spec, packets: audio[spec.Audio],
			agentGone: make(chan struct{}), ready: make(chan struct{})}
		calls[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
			defer cancel()
			if err := c.run(ctx); err != nil {
				c.mu.Lock()
				c.res.Error = err.Error()
				c.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	cpu1, rss := cpuSeconds()
	out := Output{WallSeconds: time.Since(started).Seconds(), CPUSeconds: cpu1 - cpu0, MaxRSSMB: rss}
	for _, c := range calls {
		c.mu.Lock()
		if c.res.PacketGapsMs == nil {
			c.res.PacketGapsMs = []float32{}
		}
		out.Calls = append(out.Calls, c.res)
		c.mu.Unlock()
	}
	if err := json.NewEncoder(os.Stdout).Encode(out); err != nil {
		os.Exit(1)
	}
}
