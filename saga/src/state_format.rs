//! The changelog value of a saga state: a versioned, compact binary format, and the JSON that
//! states were stored as before it (still read).
//!
//! # Format 2 (written), format 1 (read)
//!
//! ```text
//! 0xC5 0x02                      magic, format version
//! varint, then per id            the ids of the events seen: 0x00 and 16 bytes for a UUID
//!                                written the canonical way, else 0x01 and a string
//! varint                         length of the body once decompressed (at most MAX_BODY_BYTES)
//! LZ4 block                      the body, compressed against a dictionary: the fixed
//!                                DICTIONARY followed by the text of the seen ids
//! ```
//!
//! The body is the state field by field: strings as a varint length and UTF-8, integers as
//! LEB128 varints, times as the difference from `created_at` (zig-zag), optional values behind
//! a presence byte (a step's, behind one byte of flags), collected event data (`serde_json::Value`) as a tagged tree. The saga id is
//! left out when it is `<definition>/<correlation id>`, as every state made by
//! [`SagaState::new`] has it. LZ4 then removes what repeats inside one state (step names in
//! steps, deadlines and the timeline; event ids in `seen` and the timeline) and the dictionary
//! what repeats across all states (the timeline's phrases).
//!
//! Format 2 differs from format 1 in two places of the body only, where it names what the state
//! already holds instead of repeating its text. A timeline entry's text is written as one form
//! byte and its parts: 0, the text; 1 (an event received: `<type> <id><rest>`, the id one of the
//! seen ids), the type, the id's index among the seen ids and the rest; 2 (`step "<name>"<rest>`,
//! the name one of the steps'), the step's index and the rest. A step's deadline names its step
//! by index (kinds 3 and 4 for 1 and 2). LZ4 had found those repeats too, but each at the cost
//! of a match; an in-flight order saga's record went from 312 to under 300 bytes.
//!
//! A JSON value starts with `{`, never with the magic byte, so [`SagaState::decode`] tells the
//! two apart by the first byte; a record from before the binary format is read as JSON (format
//! 0). A later format takes the next version number and keeps reading the earlier ones.
//!
//! Decoding checks everything it reads: lengths against what is left, UTF-8, tags, nesting
//! (at most [`MAX_DEPTH`]), bytes left over; a broken record is an error, never a panic.

use std::collections::VecDeque;

use serde_json::{Map, Number, Value};
use uuid::Uuid;

use crate::event::Event;
use crate::state::{
    CompensationState, SagaState, Status, StepState, StepStatus, Timeline, TimelineEntry,
    TimelineKind,
};
use crate::time::{Deadline, DeadlineKind, Millis};

/// The first byte of a binary state (never `{`, nor JSON whitespace).
const MAGIC: u8 = 0xC5;
/// The binary format this build writes.
pub const STATE_FORMAT: u8 = 2;
/// The oldest binary format this build still reads.
const OLDEST_FORMAT: u8 = 1;
/// A decompressed body larger than this is refused (a state stays below about 1 MiB).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The deepest nesting of collected data read back.
const MAX_DEPTH: usize = 128;
/// At most this many items are allocated ahead of reading them (a count is checked only
/// against the bytes left, and an item in memory is larger than its bytes).
const PREALLOCATE: usize = 64;

/// What LZ4 may refer to in every state: the timeline's phrases and the statuses. Changing it
/// changes the format (a new [`STATE_FORMAT`] with its own dictionary).
const DICTIONARY: &[u8] = b"needs_operator compensating compensated completed after the saga \
was aborted; compensating it\"'s compensation acknowledged\" missed its deadline (\" failed: \
saga deadline passed step deadline of \" passedcompensation acknowledgement deadline of \" \
(attempt emitted  again aborted by an operator: rejected by an operator: approved by an \
operator: waiting for the steps in flight (up to their deadlines): (buffered) (before the \
start event)cancelled command:operator-approval:the saga missed its deadline (running -> \
compensating: pending -> running: started by step \"\" started";

/// Why a changelog value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateDecodeError {
    /// A JSON state (format 0) that does not parse.
    #[error("saga state JSON: {0}")]
    Json(String),
    /// A binary state of a format this build does not know (written by a newer version).
    #[error(
        "saga state format {0} is newer than this build reads (up to {STATE_FORMAT}): upgrade this replica"
    )]
    UnknownFormat(u8),
    /// A binary state that is broken.
    #[error("saga state format {format}: {reason}")]
    Corrupt {
        /// The format it claims.
        format: u8,
        /// What is wrong.
        reason: String,
    },
    /// Neither JSON nor a binary state.
    #[error("not a saga state (first byte {0:#04x})")]
    NotAState(u8),
    /// Empty.
    #[error("empty saga state")]
    Empty,
}

impl SagaState {
    /// The changelog value of this state, in the current binary format ([`STATE_FORMAT`]).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Writer(Vec::with_capacity(512));
        out.0.push(MAGIC);
        out.0.push(STATE_FORMAT);
        // The ids of seen events go first, a UUID as its 16 bytes, and their text joins the
        // dictionary: the timeline names them again.
        let mut dictionary = DICTIONARY.to_vec();
        out.len(self.seen.len());
        for id in &self.seen {
            match canonical_uuid(id) {
                Some(u) => {
                    out.u8(0);
                    out.uuid(&u);
                }
                None => {
                    out.u8(1);
                    out.str(id);
                }
            }
            dictionary.extend_from_slice(id.as_bytes());
        }
        let mut body = Writer(Vec::with_capacity(512));
        body.state(self);
        let compressed = lz4_flex::block::compress_with_dict(&body.0, &dictionary);
        out.varint(body.0.len() as u64);
        out.0.extend_from_slice(&compressed);
        out.0
    }

    /// Whether `bytes` is a changelog value in the format this build writes.
    pub fn is_current_format(bytes: &[u8]) -> bool {
        bytes.len() >= 2 && bytes[0] == MAGIC && bytes[1] == STATE_FORMAT
    }

    /// Reads a changelog value: the binary format, or the JSON states were stored as before it.
    pub fn decode(bytes: &[u8]) -> Result<SagaState, StateDecodeError> {
        let first = *bytes.first().ok_or(StateDecodeError::Empty)?;
        if first == MAGIC {
            return decode_binary(bytes);
        }
        let json_start = bytes.iter().find(|b| !b.is_ascii_whitespace());
        if json_start == Some(&b'{') {
            return SagaState::from_json(bytes).map_err(|e| StateDecodeError::Json(e.to_string()));
        }
        Err(StateDecodeError::NotAState(first))
    }
}

fn decode_binary(bytes: &[u8]) -> Result<SagaState, StateDecodeError> {
    let format = *bytes.get(1).ok_or_else(|| corrupt(0, "no format byte"))?;
    if !(OLDEST_FORMAT..=STATE_FORMAT).contains(&format) {
        return Err(if format > STATE_FORMAT {
            StateDecodeError::UnknownFormat(format)
        } else {
            corrupt(format, "no such format")
        });
    }
    let mut header = Reader {
        buf: &bytes[2..],
        depth: 0,
        format,
    };
    let mut dictionary = DICTIONARY.to_vec();
    let seen = header
        .seen(&mut dictionary)
        .map_err(|r| corrupt(format, r))?;
    let len = header.varint().map_err(|r| corrupt(format, r))?;
    let compressed = header.buf;
    // LZ4 expands at most about 255 times; a larger claim is a broken length.
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= MAX_BODY_BYTES && l <= compressed.len().saturating_mul(255) + 16)
        .ok_or_else(|| corrupt(format, format!("a body length of {len} bytes")))?;
    let mut body = vec![0u8; len];
    let written = lz4_flex::block::decompress_into_with_dict(compressed, &mut body, &dictionary)
        .map_err(|e| corrupt(format, format!("compressed body: {e}")))?;
    if written != len {
        return Err(corrupt(
            format,
            format!("the body is {written} bytes, not the {len} its header says"),
        ));
    }
    let mut r = Reader {
        buf: &body,
        depth: 0,
        format,
    };
    let state = r.state(seen).map_err(|reason| corrupt(format, reason))?;
    if !r.buf.is_empty() {
        return Err(corrupt(
            format,
            format!("{} bytes after the state", r.buf.len()),
        ));
    }
    Ok(state)
}

/// `id` as a UUID, when it is one written the canonical way (lower-case, hyphenated), so that
/// its 16 bytes give it back exactly.
fn canonical_uuid(id: &str) -> Option<Uuid> {
    if id.len() != 36 {
        return None;
    }
    let u = Uuid::try_parse(id).ok()?;
    let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
    (u.hyphenated().encode_lower(&mut buf) == id).then_some(u)
}

/// The name of step `i`, for a record that names it by index.
fn step_name(steps: &[StepState], i: usize) -> Result<String, String> {
    steps
        .get(i)
        .map(|s| s.name.clone())
        .ok_or_else(|| format!("step {i} of {}", steps.len()))
}

fn corrupt(format: u8, reason: impl Into<String>) -> StateDecodeError {
    StateDecodeError::Corrupt {
        format,
        reason: reason.into(),
    }
}

fn status_code(s: Status) -> u8 {
    match s {
        Status::Pending => 0,
        Status::Running => 1,
        Status::Compensating => 2,
        Status::Completed => 3,
        Status::Compensated => 4,
        Status::NeedsOperator => 5,
    }
}

fn status_of(code: u8) -> Result<Status, String> {
    Ok(match code {
        0 => Status::Pending,
        1 => Status::Running,
        2 => Status::Compensating,
        3 => Status::Completed,
        4 => Status::Compensated,
        5 => Status::NeedsOperator,
        c => return Err(format!("status {c}")),
    })
}

fn step_status_code(s: StepStatus) -> u8 {
    match s {
        StepStatus::Waiting => 0,
        StepStatus::Running => 1,
        StepStatus::Completed => 2,
        StepStatus::Failed => 3,
        StepStatus::Skipped => 4,
        StepStatus::Abandoned => 5,
        StepStatus::Unknown => 6,
    }
}

fn step_status_of(code: u8) -> Result<StepStatus, String> {
    Ok(match code {
        0 => StepStatus::Waiting,
        1 => StepStatus::Running,
        2 => StepStatus::Completed,
        3 => StepStatus::Failed,
        4 => StepStatus::Skipped,
        5 => StepStatus::Abandoned,
        6 => StepStatus::Unknown,
        c => return Err(format!("step status {c}")),
    })
}

fn timeline_kind_code(k: TimelineKind) -> u8 {
    match k {
        TimelineKind::Received => 0,
        TimelineKind::Buffered => 1,
        TimelineKind::Ignored => 2,
        TimelineKind::Deadline => 3,
        TimelineKind::Command => 4,
        TimelineKind::Emitted => 5,
        TimelineKind::Status => 6,
    }
}

fn timeline_kind_of(code: u8) -> Result<TimelineKind, String> {
    Ok(match code {
        0 => TimelineKind::Received,
        1 => TimelineKind::Buffered,
        2 => TimelineKind::Ignored,
        3 => TimelineKind::Deadline,
        4 => TimelineKind::Command,
        5 => TimelineKind::Emitted,
        6 => TimelineKind::Status,
        c => return Err(format!("timeline kind {c}")),
    })
}

// Tags of collected data (`serde_json::Value`).
const V_NULL: u8 = 0;
const V_FALSE: u8 = 1;
const V_TRUE: u8 = 2;
const V_UINT: u8 = 3;
const V_NEG: u8 = 4;
const V_FLOAT: u8 = 5;
const V_STRING: u8 = 6;
const V_ARRAY: u8 = 7;
const V_OBJECT: u8 = 8;

/// Format 2's forms of a timeline entry's text.
const TEXT_AS_IS: u8 = 0;
const TEXT_RECEIVED: u8 = 1;
const TEXT_STEP: u8 = 2;

struct Writer(Vec<u8>);

impl Writer {
    fn u8(&mut self, b: u8) {
        self.0.push(b);
    }

    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn len(&mut self, n: usize) {
        self.varint(n as u64);
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    /// A time as its zig-zag difference from `base` (wrapping, so any two `u64`s round-trip).
    fn time(&mut self, base: Millis, at: Millis) {
        let d = at.0.wrapping_sub(base.0) as i64;
        self.varint(((d << 1) ^ (d >> 63)) as u64);
    }

    /// A time as [`Self::time`] writes it, with a 3-bit tag in the same varint.
    fn tagged_time(&mut self, base: Millis, at: Millis, tag: u8) {
        let d = at.0.wrapping_sub(base.0) as i64;
        let mut v = (u128::from(((d << 1) ^ (d >> 63)) as u64) << 3) | u128::from(tag & 0x07);
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }

    fn uuid(&mut self, id: &Uuid) {
        self.0.extend_from_slice(id.as_bytes());
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Null => self.u8(V_NULL),
            Value::Bool(false) => self.u8(V_FALSE),
            Value::Bool(true) => self.u8(V_TRUE),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    self.u8(V_UINT);
                    self.varint(u);
                } else if let Some(i) = n.as_i64() {
                    // Negative: stored as its magnitude minus one (so i64::MIN fits).
                    self.u8(V_NEG);
                    self.varint(!(i as u64));
                } else {
                    self.u8(V_FLOAT);
                    self.0
                        .extend_from_slice(&n.as_f64().unwrap_or(0.0).to_le_bytes());
                }
            }
            Value::String(s) => {
                self.u8(V_STRING);
                self.str(s);
            }
            Value::Array(items) => {
                self.u8(V_ARRAY);
                self.len(items.len());
                for item in items {
                    self.value(item);
                }
            }
            Value::Object(map) => {
                self.u8(V_OBJECT);
                self.len(map.len());
                for (k, v) in map {
                    self.str(k);
                    self.value(v);
                }
            }
        }
    }

    fn state(&mut self, s: &SagaState) {
        let base = s.created_at;
        self.str(&s.definition);
        self.varint(u64::from(s.version));
        self.str(&s.correlation_id);
        let derived = s.saga_id.len() == s.definition.len() + 1 + s.correlation_id.len()
            && s.saga_id.starts_with(s.definition.as_str())
            && s.saga_id[s.definition.len()..].starts_with('/')
            && s.saga_id.ends_with(s.correlation_id.as_str());
        let flags = u8::from(!derived)
            | u8::from(s.started_at.is_some()) << 1
            | u8::from(s.start_data.is_some()) << 2
            | u8::from(s.abort_reason.is_some()) << 3
            | u8::from(s.abort_emitted) << 4
            | status_code(s.status) << 5;
        self.u8(flags);
        if !derived {
            self.str(&s.saga_id);
        }
        self.varint(base.0);
        if let Some(at) = s.started_at {
            self.time(base, at);
        }
        self.time(base, s.updated_at);
        if let Some(data) = &s.start_data {
            self.value(data);
        }
        if let Some(reason) = &s.abort_reason {
            self.str(reason);
        }
        self.len(s.steps.len());
        for step in &s.steps {
            self.step(base, step);
        }
        self.len(s.pending.len());
        for e in &s.pending {
            self.str(&e.id);
            self.str(&e.event_type);
            self.str(&e.correlation_id);
            self.time(base, e.time);
            self.value(&e.data);
        }
        self.len(s.deadlines.len());
        let step_index = |name: &str| s.steps.iter().position(|st| st.name == name);
        for d in &s.deadlines {
            match &d.kind {
                DeadlineKind::Saga => self.u8(0),
                DeadlineKind::Step(step) | DeadlineKind::CompensationAck(step) => {
                    let by_name = if matches!(d.kind, DeadlineKind::Step(_)) {
                        1
                    } else {
                        2
                    };
                    match step_index(step) {
                        Some(i) => {
                            self.u8(by_name + 2);
                            self.len(i);
                        }
                        None => {
                            self.u8(by_name);
                            self.str(step);
                        }
                    }
                }
            }
            self.time(base, d.at);
        }
        self.varint(u64::from(s.completions));
        self.varint(s.timeline.dropped);
        self.len(s.timeline.entries.len());
        for e in &s.timeline.entries {
            self.tagged_time(base, e.at, timeline_kind_code(e.kind));
            self.timeline_text(s, e);
        }
    }

    /// A timeline entry's text, naming a seen id or a step by index where it holds one (see
    /// the module docs, format 2).
    fn timeline_text(&mut self, s: &SagaState, e: &TimelineEntry) {
        if e.kind == TimelineKind::Received
            && let Some((event_type, rest)) = e.what.split_once(' ')
            // The event just received is among the last seen: look from the newest.
            && let Some((i, id)) = s
                .seen
                .iter()
                .enumerate()
                .rev()
                .find(|(_, id)| !id.is_empty() && rest.starts_with(id.as_str()))
        {
            self.u8(TEXT_RECEIVED);
            self.str(event_type);
            self.len(i);
            self.str(&rest[id.len()..]);
            return;
        }
        if let Some(named) = e.what.strip_prefix("step \"")
            && let Some((i, rest)) = s.steps.iter().enumerate().find_map(|(i, step)| {
                named
                    .strip_prefix(step.name.as_str())
                    .and_then(|r| r.strip_prefix('"'))
                    .map(|rest| (i, rest))
            })
        {
            self.u8(TEXT_STEP);
            self.len(i);
            self.str(rest);
            return;
        }
        self.u8(TEXT_AS_IS);
        self.str(&e.what);
    }

    fn step(&mut self, base: Millis, step: &StepState) {
        self.str(&step.name);
        let (tag, event_id) = match &step.compensation {
            CompensationState::NotStarted => (0, None),
            CompensationState::Emitted { event_id, .. } => (1, Some(event_id)),
            CompensationState::Done { event_id } => (2, Some(event_id)),
            CompensationState::Acknowledged { event_id, .. } => (3, Some(event_id)),
            CompensationState::Stuck { event_id, .. } => (4, Some(event_id)),
            CompensationState::Skipped => (5, None),
        };
        self.u8(step_status_code(step.status) | (tag << 3));
        let flags = u8::from(step.started_at.is_some())
            | u8::from(step.finished_at.is_some()) << 1
            | u8::from(step.completion_rank.is_some()) << 2
            | u8::from(step.late) << 3
            | u8::from(step.data.is_some()) << 4
            | u8::from(step.early_ack.is_some()) << 5
            | u8::from(step.needs_operator.is_some()) << 6;
        self.u8(flags);
        if let Some(at) = step.started_at {
            self.time(base, at);
        }
        if let Some(at) = step.finished_at {
            self.time(base, at);
        }
        if let Some(rank) = step.completion_rank {
            self.varint(u64::from(rank));
        }
        if let Some(data) = &step.data {
            self.value(data);
        }
        if let Some(at) = step.early_ack {
            self.time(base, at);
        }
        if let Some(reason) = &step.needs_operator {
            self.str(reason);
        }
        if let Some(id) = event_id {
            self.uuid(id);
        }
        match &step.compensation {
            CompensationState::Emitted { attempts, .. } => self.varint(u64::from(*attempts)),
            CompensationState::Acknowledged { at, .. } => self.time(base, *at),
            CompensationState::Stuck {
                attempts, reason, ..
            } => {
                self.varint(u64::from(*attempts));
                self.str(reason);
            }
            _ => {}
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    depth: usize,
    /// The format being read (1 or 2).
    format: u8,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        let (&b, rest) = self.buf.split_first().ok_or("truncated")?;
        self.buf = rest;
        Ok(b)
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut v: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            if shift == 63 && b > 1 {
                return Err("a varint over 64 bits".into());
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a varint over 64 bits".into())
    }

    fn u32(&mut self) -> Result<u32, String> {
        let v = self.varint()?;
        u32::try_from(v).map_err(|_| format!("{v} does not fit 32 bits"))
    }

    /// An index into something already read (checked by the caller).
    fn index(&mut self) -> Result<usize, String> {
        let v = self.varint()?;
        usize::try_from(v).map_err(|_| format!("an index of {v}"))
    }

    /// A count of items, each at least one byte: never more than the bytes left.
    fn count(&mut self) -> Result<usize, String> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= self.buf.len())
            .ok_or_else(|| format!("a count of {n} with {} bytes left", self.buf.len()))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        if n > self.buf.len() {
            return Err(format!("{n} bytes wanted, {} left", self.buf.len()));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn str(&mut self) -> Result<String, String> {
        self.bytes_str().map(str::to_owned)
    }

    /// A string, borrowed from the buffer.
    fn bytes_str(&mut self) -> Result<&'a str, String> {
        let n = self.varint()?;
        let n = usize::try_from(n).map_err(|_| format!("a string of {n} bytes"))?;
        let bytes = self.bytes(n)?;
        std::str::from_utf8(bytes).map_err(|e| format!("a string that is not UTF-8: {e}"))
    }

    fn time(&mut self, base: Millis) -> Result<Millis, String> {
        let z = self.varint()?;
        let d = (z >> 1) as i64 ^ -((z & 1) as i64);
        Ok(Millis(base.0.wrapping_add(d as u64)))
    }

    fn tagged_time(&mut self, base: Millis) -> Result<(Millis, u8), String> {
        let mut v: u128 = 0;
        for shift in (0..70).step_by(7) {
            let b = self.u8()?;
            v |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                let z = u64::try_from(v >> 3).map_err(|_| "a time over 64 bits")?;
                let d = (z >> 1) as i64 ^ -((z & 1) as i64);
                return Ok((Millis(base.0.wrapping_add(d as u64)), (v & 0x07) as u8));
            }
        }
        Err("a time over 64 bits".into())
    }

    fn uuid(&mut self) -> Result<Uuid, String> {
        let b = self.bytes(16)?;
        Uuid::from_slice(b).map_err(|e| e.to_string())
    }

    /// The seen ids ahead of the body, each added to `dictionary`.
    fn seen(&mut self, dictionary: &mut Vec<u8>) -> Result<VecDeque<String>, String> {
        let n = self.count()?;
        let mut seen = VecDeque::with_capacity(n.min(PREALLOCATE));
        for _ in 0..n {
            let id = match self.u8()? {
                0 => self.uuid()?.hyphenated().to_string(),
                1 => self.str()?,
                t => return Err(format!("a seen id tag of {t}")),
            };
            dictionary.extend_from_slice(id.as_bytes());
            seen.push_back(id);
        }
        Ok(seen)
    }

    fn value(&mut self) -> Result<Value, String> {
        Ok(match self.u8()? {
            V_NULL => Value::Null,
            V_FALSE => Value::Bool(false),
            V_TRUE => Value::Bool(true),
            V_UINT => Value::Number(self.varint()?.into()),
            V_NEG => Value::Number((!self.varint()? as i64).into()),
            V_FLOAT => {
                let b = self.bytes(8)?;
                let f = f64::from_le_bytes(b.try_into().map_err(|_| "a float")?);
                Value::Number(Number::from_f64(f).ok_or("a float that is not finite")?)
            }
            V_STRING => Value::String(self.str()?),
            tag @ (V_ARRAY | V_OBJECT) => {
                if self.depth >= MAX_DEPTH {
                    return Err(format!("data nested deeper than {MAX_DEPTH}"));
                }
                self.depth += 1;
                let n = self.count()?;
                let v = if tag == V_ARRAY {
                    let mut items = Vec::with_capacity(n.min(PREALLOCATE));
                    for _ in 0..n {
                        items.push(self.value()?);
                    }
                    Value::Array(items)
                } else {
                    let mut map = Map::new();
                    for _ in 0..n {
                        let k = self.str()?;
                        let v = self.value()?;
                        map.insert(k, v);
                    }
                    Value::Object(map)
                };
                self.depth -= 1;
                v
            }
            t => return Err(format!("a data tag of {t}")),
        })
    }

    fn state(&mut self, seen: VecDeque<String>) -> Result<SagaState, String> {
        let definition = self.str()?;
        let version = self.u32()?;
        let correlation_id = self.str()?;
        let flags = self.u8()?;
        let has = |bit: u8| flags & (1 << bit) != 0;
        let status = status_of(flags >> 5)?;
        let saga_id = if has(0) {
            self.str()?
        } else {
            format!("{definition}/{correlation_id}")
        };
        let base = Millis(self.varint()?);
        let started_at = if has(1) { Some(self.time(base)?) } else { None };
        let updated_at = self.time(base)?;
        let start_data = if has(2) { Some(self.value()?) } else { None };
        let abort_reason = if has(3) { Some(self.str()?) } else { None };
        let abort_emitted = has(4);
        let n = self.count()?;
        let mut steps = Vec::with_capacity(n.min(PREALLOCATE));
        for _ in 0..n {
            steps.push(self.step(base)?);
        }
        let n = self.count()?;
        let mut pending = Vec::with_capacity(n.min(PREALLOCATE));
        for _ in 0..n {
            pending.push(Event {
                id: self.str()?,
                event_type: self.str()?,
                correlation_id: self.str()?,
                time: self.time(base)?,
                data: self.value()?,
            });
        }
        let n = self.count()?;
        let mut deadlines = Vec::with_capacity(n.min(PREALLOCATE));
        for _ in 0..n {
            let kind = match self.u8()? {
                0 => DeadlineKind::Saga,
                1 => DeadlineKind::Step(self.str()?),
                2 => DeadlineKind::CompensationAck(self.str()?),
                3 if self.format >= 2 => DeadlineKind::Step(step_name(&steps, self.index()?)?),
                4 if self.format >= 2 => {
                    DeadlineKind::CompensationAck(step_name(&steps, self.index()?)?)
                }
                k => return Err(format!("a deadline kind of {k}")),
            };
            deadlines.push(Deadline {
                kind,
                at: self.time(base)?,
            });
        }
        let completions = self.u32()?;
        let dropped = self.varint()?;
        let n = self.count()?;
        let mut entries = VecDeque::with_capacity(n.min(PREALLOCATE));
        for _ in 0..n {
            let (at, kind) = self.tagged_time(base)?;
            let what = if self.format >= 2 {
                self.timeline_text(&seen, &steps)?
            } else {
                self.str()?
            };
            entries.push_back(TimelineEntry {
                at,
                kind: timeline_kind_of(kind)?,
                what,
            });
        }
        Ok(SagaState {
            saga_id,
            definition,
            version,
            correlation_id,
            status,
            created_at: base,
            started_at,
            updated_at,
            start_data,
            abort_reason,
            abort_emitted,
            steps,
            pending,
            deadlines,
            seen,
            completions,
            timeline: Timeline { entries, dropped },
        })
    }

    /// A timeline entry's text as [`Writer::timeline_text`] writes it.
    fn timeline_text(
        &mut self,
        seen: &VecDeque<String>,
        steps: &[StepState],
    ) -> Result<String, String> {
        Ok(match self.u8()? {
            TEXT_AS_IS => self.str()?,
            TEXT_RECEIVED => {
                let event_type = self.str()?;
                let i = self.index()?;
                let id = seen
                    .get(i)
                    .ok_or_else(|| format!("seen id {i} of {}", seen.len()))?;
                let rest = self.bytes_str()?;
                let mut what = event_type;
                what.reserve(1 + id.len() + rest.len());
                what.push(' ');
                what.push_str(id);
                what.push_str(rest);
                what
            }
            TEXT_STEP => {
                let i = self.index()?;
                let name = &steps
                    .get(i)
                    .ok_or_else(|| format!("step {i} of {}", steps.len()))?
                    .name;
                let rest = self.bytes_str()?;
                let mut what = String::with_capacity(7 + name.len() + rest.len());
                what.push_str("step \"");
                what.push_str(name);
                what.push('"');
                what.push_str(rest);
                what
            }
            f => return Err(format!("a timeline text form of {f}")),
        })
    }

    fn step(&mut self, base: Millis) -> Result<StepState, String> {
        let name = self.str()?;
        let code = self.u8()?;
        let status = step_status_of(code & 0x07)?;
        let tag = code >> 3;
        let flags = self.u8()?;
        if flags & 0x80 != 0 {
            return Err(format!("step flags {flags:#04x}"));
        }
        let has = |bit: u8| flags & (1 << bit) != 0;
        let started_at = if has(0) { Some(self.time(base)?) } else { None };
        let finished_at = if has(1) { Some(self.time(base)?) } else { None };
        let completion_rank = if has(2) { Some(self.u32()?) } else { None };
        let late = has(3);
        let data = if has(4) { Some(self.value()?) } else { None };
        let early_ack = if has(5) { Some(self.time(base)?) } else { None };
        let needs_operator = if has(6) { Some(self.str()?) } else { None };
        let compensation = match tag {
            0 => CompensationState::NotStarted,
            1 => CompensationState::Emitted {
                event_id: self.uuid()?,
                attempts: self.u32()?,
            },
            2 => CompensationState::Done {
                event_id: self.uuid()?,
            },
            3 => CompensationState::Acknowledged {
                event_id: self.uuid()?,
                at: self.time(base)?,
            },
            4 => CompensationState::Stuck {
                event_id: self.uuid()?,
                attempts: self.u32()?,
                reason: self.str()?,
            },
            5 => CompensationState::Skipped,
            t => return Err(format!("a compensation state of {t}")),
        };
        Ok(StepState {
            name,
            status,
            started_at,
            finished_at,
            completion_rank,
            late,
            data,
            compensation,
            early_ack,
            needs_operator,
        })
    }
}
