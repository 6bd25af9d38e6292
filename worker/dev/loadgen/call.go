package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"github.com/livekit/protocol/auth"
	"github.com/livekit/protocol/livekit"
	lksdk "github.com/livekit/server-sdk-go/v2"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media"
)

// silence is one 20 ms Opus frame of digital silence (CELT fullband, TOC 0xf8): what
// the caller sends between its turns, as a phone line does (no DTX).
var silence = []byte{0xf8, 0xff, 0xfe}

const silenceDur = 20 * time.Millisecond

// CallResult is what one caller saw, on the caller's timeline (seconds since its audio
// started, t0 a Unix time) and, for the agent's turn events, the shared wall clock.
type CallResult struct {
	Room           string            `json:"room"`
	T0             float64           `json:"t0"`
	CallerTurns    [][2]float64      `json:"caller_turns"`
	Onsets         []float64         `json:"onsets"`
	TurnEvents     []json.RawMessage `json:"turn_events"`
	AgentIdentity  string            `json:"agent_identity,omitempty"`
	AgentJoinedAt  float64           `json:"agent_joined_at,omitempty"`
	AgentLeftAt    float64           `json:"agent_left_at,omitempty"`
	Packets        int               `json:"agent_packets"`
	DecodedPackets int               `json:"decoded_packets"`
	PacketGapsMs   []float32         `json:"packet_gaps_ms"`
	Error          string            `json:"error,omitempty"`
}

type turnEvent struct {
	Role string  `json:"role"`
	At   float64 `json:"at"`
}

type call struct {
	cfg     *Config
	spec    CallSpec
	packets []opusPacket
	res     CallResult

	mu        sync.Mutex
	events    []turnEvent
	agentGone chan struct{}
	goneOnce  sync.Once
	ready     chan struct{}
	readyOnce sync.Once
	// the reply awaited: decode agent packets from decodeFrom, the first one louder than
	// the threshold after speechEnd is the turn's first agent audio
	decodeFrom, speechEnd float64
	awaiting              bool
	lastSeq               uint16
	lastTS                uint32
	lastAt                float64
	havePrev              bool
}

func now() float64 { return float64(time.Now().UnixNano()) / 1e9 }

func roomName() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return "call-" + hex.EncodeToString(b)
}

func (c *call) spokeSince(wall float64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.events {
		if e.Role == "assistant" && e.At > wall {
			return true
		}
	}
	return false
}

func (c *call) gone() bool {
	select {
	case <-c.agentGone:
		return true
	default:
		return false
	}
}

func (c *call) onData(p lksdk.DataPacket, _ lksdk.DataReceiveParams) {
	u, ok := p.(*lksdk.UserDataPacket)
	if !ok || u.Topic != c.cfg.EventsTopic {
		return
	}
	var e turnEvent
	if json.Unmarshal(u.Payload, &e) != nil {
		return
	}
	c.mu.Lock()
	c.events = append(c.events, e)
	c.res.TurnEvents = append(c.res.TurnEvents, json.RawMessage(append([]byte(nil), u.Payload...)))
	c.mu.Unlock()
}

func (c *call) onTrack(track *webrtc.TrackRemote, _ *lksdk.RemoteTrackPublication, rp *lksdk.RemoteParticipant) {
	if track.Kind() != webrtc.RTPCodecTypeAudio {
		return
	}
	c.mu.Lock()
	c.res.AgentIdentity = rp.Identity()
	c.res.AgentJoinedAt = now()
	c.mu.Unlock()
	c.readyOnce.Do(func() { close(c.ready) })
	go c.receive(track)
}

// receive reads the agent's RTP packets: arrival gaps of consecutive packets always,
// decoding only while a reply is awaited.
func (c *call) receive(track *webrtc.TrackRemote) {
	dec, err := newDecoder()
	if err != nil {
		c.mu.Lock()
		c.res.Error = err.Error()
		c.mu.Unlock()
		return
	}
	defer dec.close()
	for {
		pkt, _, err := track.ReadRTP()
		if err != nil {
			return
		}
		at := now()
		c.mu.Lock()
		c.res.Packets++
		if c.havePrev && pkt.SequenceNumber == c.lastSeq+1 && pkt.Timestamp-c.lastTS <= 1920 {
			c.res.PacketGapsMs = append(c.res.PacketGapsMs, float32((at-c.lastAt)*1000))
		}
		c.lastSeq, c.lastTS, c.lastAt, c.havePrev = pkt.SequenceNumber, pkt.Timestamp, at, true
		decode := c.awaiting && at >= c.decodeFrom
		c.mu.Unlock()
		if !decode {
			continue
		}
		loud := dec.rms(pkt.Payload) > c.cfg.SpeechRMS
		c.mu.Lock()
		c.res.DecodedPackets++
		if loud && c.awaiting && at > c.speechEnd {
			c.res.Onsets = append(c.res.Onsets, round3(at-c.res.T0))
			c.awaiting = false
		}
		c.mu.Unlock()
	}
}

func round3(x float64) float64 { return float64(int64(x*1000+0.5)) / 1000 }

// mic publishes 20 ms packets paced on the wall clock from t0.
type mic struct {
	track *lksdk.LocalTrack
	t0    time.Time
	pos   time.Duration
}

func (m *mic) send(data []byte, dur time.Duration) error {
	if err := m.track.WriteSample(media.Sample{Data: data, Duration: dur}, nil); err != nil {
		return err
	}
	m.pos += dur
	if d := time.Until(m.t0.Add(m.pos)); d > 0 {
		time.Sleep(d)
	}
	return nil
}

func (c *call) play(m *mic, from, to time.Duration) error {
	for _, p := range c.packets {
		if p.at < from || p.at >= to {
			continue
		}
		if c.gone() {
			return nil
		}
		if err := m.send(p.data, p.dur); err != nil {
			return err
		}
	}
	return nil
}

func (c *call) silenceUntil(m *mic, done func() bool, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for !done() && !c.gone() && time.Now().Before(deadline) {
		if err := m.send(silence, silenceDur); err != nil {
			return err
		}
	}
	return nil
}

func secs(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }

func (c *call) run(ctx context.Context) error {
	cfg := c.cfg
	c.res.Room = roomName()
	rooms := lksdk.NewRoomServiceClient(cfg.HTTPURL, cfg.APIKey, cfg.apiSecret)
	if _, err := rooms.CreateRoom(ctx, &livekit.CreateRoomRequest{Name: c.res.Room}); err != nil {
		return fmt.Errorf("create room: %w", err)
	}
	dispatch := lksdk.NewAgentDispatchServiceClient(cfg.HTTPURL, cfg.APIKey, cfg.apiSecret)
	if _, err := dispatch.CreateDispatch(ctx, &livekit.CreateAgentDispatchRequest{
		AgentName: cfg.AgentName, Room: c.res.Room, Metadata: cfg.Metadata,
	}); err != nil {
		return fmt.Errorf("create dispatch: %w", err)
	}
	at := auth.NewAccessToken(cfg.APIKey, cfg.apiSecret)
	at.SetVideoGrant(&auth.VideoGrant{RoomJoin: true, Room: c.res.Room}).SetIdentity("caller").SetName("Caller")
	token, err := at.ToJWT()
	if err != nil {
		return err
	}
	cb := lksdk.NewRoomCallback()
	cb.ParticipantCallback.OnTrackSubscribed = c.onTrack
	cb.ParticipantCallback.OnDataPacket = c.onData
	cb.OnParticipantDisconnected = func(rp *lksdk.RemoteParticipant) {
		if rp.Kind() == lksdk.ParticipantAgent {
			c.mu.Lock()
			c.res.AgentLeftAt = now()
			c.mu.Unlock()
			c.goneOnce.Do(func() { close(c.agentGone) })
		}
	}
	room, err := lksdk.ConnectToRoomWithToken(cfg.URL, token, cb)
	if err != nil {
		return fmt.Errorf("join %s: %w", c.res.Room, err)
	}
	defer room.Disconnect()
	track, err := lksdk.NewLocalSampleTrack(webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2,
	})
	if err != nil {
		return err
	}
	if _, err := room.LocalParticipant.PublishTrack(track, &lksdk.TrackPublicationOptions{
		Name: "caller-mic", Source: livekit.TrackSource_MICROPHONE, DisableDTX: true,
	}); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	select {
	case <-c.ready:
	case <-time.After(secs(cfg.JoinTimeout)):
		return fmt.Errorf("no agent audio track in room %s within %.0f s of dispatch", c.res.Room, cfg.JoinTimeout)
	}
	start := time.Now()
	c.mu.Lock()
	c.res.T0 = float64(start.UnixNano()) / 1e9
	c.mu.Unlock()
	m := &mic{track: track, t0: start}
	answer := secs(cfg.AnswerTimeout)
	for i, turn := range c.spec.Turns {
		if i == 0 { // the lead-in as recorded, then the greeting is awaited
			if err := c.play(m, 0, secs(turn[0])); err != nil {
				return err
			}
			if err := c.silenceUntil(m, func() bool { return c.spokeSince(0) }, answer); err != nil {
				return err
			}
		}
		if err := c.silenceUntil(m, func() bool { return false }, secs(cfg.Pause)); err != nil {
			return err
		}
		began := m.pos.Seconds()
		c.mu.Lock()
		c.decodeFrom = c.res.T0 + began
		c.speechEnd = c.res.T0 + began + c.spec.SpeechEnds[i]
		c.awaiting = true
		c.mu.Unlock()
		if err := c.play(m, secs(turn[0]), secs(turn[1])); err != nil {
			return err
		}
		played := m.pos.Seconds()
		c.mu.Lock()
		c.res.CallerTurns = append(c.res.CallerTurns, [2]float64{round3(began), round3(played)})
		c.mu.Unlock()
		wall := c.res.T0 + played
		if err := c.silenceUntil(m, func() bool { return c.spokeSince(wall) }, answer); err != nil {
			return err
		}
	}
	if err := c.silenceUntil(m, func() bool { return false }, secs(cfg.Tail)); err != nil {
		return err
	}
	// a reply still awaited after the tail was not heard
	c.mu.Lock()
	c.awaiting = false
	c.mu.Unlock()
	return nil
}
