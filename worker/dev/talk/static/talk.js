// The page of `voice-worker talk`: join a local LiveKit room as the caller, publish the
// microphone, play the agent, and show what LiveKit and the worker say about the call:
// the transcription streams (lk.transcription: the caller's words as the worker heard
// them, interim then final, and the agent's words as it speaks them), the agent's state
// (its lk.agent.state attribute), each turn's latency (the worker's turn events on the
// data topic that POST /session names) and how much of the agent's audio arrived
// (window.talkStats, from the WebRTC receiver: seconds decoded, energy, bytes).
import { ParticipantKind, Room, RoomEvent, Track } from 'livekit-client';

const TRANSCRIPTION_TOPIC = 'lk.transcription';
const AGENT_STATE = 'lk.agent.state';

const $ = (id) => document.getElementById(id);
const lines = new Map(); // transcription segment id -> <li>
let room = null;
let eventsTopic = null;
let turns = 0;
let statsTimer = null;
window.talkStats = { bytesReceived: 0, totalSamplesDuration: 0, totalAudioEnergy: 0 };

function badge(id, state, text) {
  const el = $(id);
  el.dataset.state = state;
  el.textContent = text;
}

function showError(message) {
  const el = $('error');
  el.textContent = message;
  el.hidden = false;
}

function segmentLine(segment, role) {
  let li = lines.get(segment);
  if (!li) {
    li = document.createElement('li');
    li.dataset.role = role;
    li.dataset.final = 'false';
    const who = document.createElement('span');
    who.className = 'who';
    who.textContent = role === 'agent' ? 'Agent' : 'You';
    const text = document.createElement('span');
    text.className = 'text';
    li.append(who, text);
    $('transcript').append(li);
    lines.set(segment, li);
  }
  return li;
}

function isCaller(identity, attributes) {
  if (identity === room.localParticipant.identity) return true;
  const track = attributes['lk.transcribed_track_id'];
  return [...room.localParticipant.trackPublications.keys()].includes(track);
}

// The agent writes its reply as one stream of deltas, final in the trailer; the caller's
// words come as one whole-text stream per interim result under one segment id. Either
// way a stream's text replaces its segment's line.
async function onTranscription(reader, participant) {
  const attributes = reader.info.attributes || {};
  const segment = attributes['lk.segment_id'] || reader.info.id;
  const role = isCaller(participant.identity, attributes) ? 'caller' : 'agent';
  const li = segmentLine(segment, role);
  const text = li.querySelector('.text');
  let got = '';
  for await (const chunk of reader) {
    got += chunk;
    text.textContent = got;
  }
  const final = (reader.info.attributes || {})['lk.transcription_final'] === 'true';
  if (final) li.dataset.final = 'true';
}

function seconds(value) {
  return typeof value === 'number' ? `${value.toFixed(2)} s` : '–';
}

function onTurn(event) {
  if (event.type !== 'turn' || event.role !== 'assistant') return;
  turns += 1;
  const m = event.metrics || {};
  const row = document.createElement('tr');
  row.dataset.turn = String(turns);
  for (const [value, cls] of [
    [String(turns), 'num'],
    [event.text, ''],
    [seconds(m.e2e_latency), 'num latency'],
    [seconds(m.llm_node_ttft), 'num'],
    [seconds(m.tts_node_ttfb), 'num'],
  ]) {
    const td = document.createElement('td');
    td.className = cls;
    td.textContent = value;
    row.append(td);
  }
  $('turns').querySelector('tbody').append(row);
}

// The agent's audio as the browser decoded it: a call whose transcript shows words but
// whose audio never arrived is broken, and this says which.
function watchAudio(track) {
  clearInterval(statsTimer);
  statsTimer = setInterval(async () => {
    const stats = await track.getReceiverStats();
    if (!stats) return;
    window.talkStats = {
      bytesReceived: stats.bytesReceived || 0,
      totalSamplesDuration: stats.totalSamplesDuration || 0,
      totalAudioEnergy: stats.totalAudioEnergy || 0,
    };
    const heard = window.talkStats.totalAudioEnergy > 0;
    badge('agent-audio', heard ? 'connected' : 'idle',
      `agent audio: ${window.talkStats.totalSamplesDuration.toFixed(1)} s received`);
  }, 500);
}

function watchAgent(participant) {
  if (participant.kind !== ParticipantKind.AGENT) return;
  const state = participant.attributes[AGENT_STATE];
  badge('agent-state', state || 'joined', `agent: ${state || 'joined'}`);
}

async function start() {
  $('start').disabled = true;
  $('error').hidden = true;
  badge('call-state', 'connecting', 'connecting…');
  try {
    const agentId = $('agent-id').value.trim();
    const resp = await fetch('/session', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(agentId ? { agentId } : {}),
    });
    if (!resp.ok) throw new Error(`POST /session: ${resp.status} ${await resp.text()}`);
    const session = await resp.json();
    eventsTopic = session.eventsTopic;
    if (session.title) $('agent-title').textContent = session.title;
    room = new Room();
    room.registerTextStreamHandler(TRANSCRIPTION_TOPIC, (reader, participant) => {
      onTranscription(reader, participant).catch((err) => console.warn('transcription', err));
    });
    room
      .on(RoomEvent.TrackSubscribed, (track) => {
        if (track.kind !== Track.Kind.Audio) return;
        $('audio').append(track.attach());
        watchAudio(track);
      })
      .on(RoomEvent.TrackUnsubscribed, (track) => track.detach().forEach((el) => el.remove()))
      .on(RoomEvent.ParticipantConnected, watchAgent)
      .on(RoomEvent.ParticipantAttributesChanged, (_changed, participant) => watchAgent(participant))
      .on(RoomEvent.ParticipantDisconnected, (participant) => {
        if (participant.kind === ParticipantKind.AGENT) badge('agent-state', 'absent', 'agent: left');
      })
      .on(RoomEvent.DataReceived, (payload, _participant, _kind, topic) => {
        if (topic === eventsTopic) onTurn(JSON.parse(new TextDecoder().decode(payload)));
      })
      .on(RoomEvent.Disconnected, () => {
        clearInterval(statsTimer);
        badge('call-state', 'idle', 'call ended');
        $('start').disabled = false;
        $('hangup').disabled = true;
        $('mute').disabled = true;
      });
    await room.connect(session.url, session.token);
    room.remoteParticipants.forEach(watchAgent);
    await room.startAudio();
    await room.localParticipant.setMicrophoneEnabled(true);
    badge('call-state', 'connected', `in room ${session.room}`);
    $('hangup').disabled = false;
    $('mute').disabled = false;
  } catch (err) {
    badge('call-state', 'failed', 'failed');
    showError(String(err && err.message ? err.message : err));
    $('start').disabled = false;
    if (room) await room.disconnect();
  }
}

async function configure() {
  const resp = await fetch('/config');
  if (!resp.ok) return;
  const config = await resp.json();
  if (config.title) $('agent-title').textContent = config.title;
  if (config.agentId) $('agent-id').value = config.agentId;
}

configure().catch((err) => showError(String(err)));
$('start').addEventListener('click', start);
$('hangup').addEventListener('click', () => room && room.disconnect());
$('mute').addEventListener('click', async () => {
  if (!room) return;
  const muted = $('mute').getAttribute('aria-pressed') !== 'true';
  await room.localParticipant.setMicrophoneEnabled(!muted);
  $('mute').setAttribute('aria-pressed', String(muted));
  $('mute').textContent = muted ? 'Unmute' : 'Mute';
});
