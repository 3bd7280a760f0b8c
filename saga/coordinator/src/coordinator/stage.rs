//! Batch staging: each input of a batch (an event, an operator command, a fired deadline)
//! through the pure state machine, and the actions it returns turned into records of the
//! batch's transaction. Nothing here sends, commits or changes the runtime's memory: the
//! records and what the batch changes are collected in [`Staged`], sent once the batch's
//! transaction has begun. So a batch can be staged while the previous one commits.

use std::collections::{BTreeMap, HashMap};

use choreo_bus::wire::codec::{JsonEvent, WriterSchemaError};
use choreo_bus::wire::envelope::Envelope;
use choreo_bus::wire::headers::Readable as _;
use choreo_bus::wire::partition::partition_of;
use choreo_bus::wire::trace;
use choreo_bus::{BusError, DecodeError};
use choreo_saga::{
    Action, EmitKind, Event, Input, Millis, SagaState, Status, apply, apply_command,
};
use rdkafka::Message;
use rdkafka::message::{BorrowedMessage, Header, OwnedHeaders};
use rdkafka::producer::DeliveryFuture;

use super::runtime::{BatchError, Runtime};
use crate::command::CommandRecord;
use crate::error::CoordinatorError;
use crate::index::Due;

/// A saga state larger than this, serialized, is refused: the input that would make it so is
/// dead-lettered instead (Kafka's default record limit is 1 MB).
pub const MAX_STATE_BYTES: usize = 512 * 1024;

/// Inputs smaller than this cannot grow a state much (timelines and texts are bounded by the
/// saga core); larger ones have the state they produce measured before it is staged.
const MEASURE_INPUTS_FROM: usize = 1024;

/// On a record of the re-keying topic: the definition it was forwarded for.
pub(crate) const REKEY_FOR_HEADER: &str = "choreo_rekey_for";
/// On a record of the re-keying topic: `<topic>/<partition>/<offset>` where it first arrived
/// (its identity when it carries no `ce_id`).
pub(crate) const REKEYED_FROM_HEADER: &str = "choreo_rekeyed_from";

/// A record of a batch, as the consumer handed it over: read in place, never copied (it holds
/// its fetch buffer until the batch is done).
pub(crate) type Record<'c> = BorrowedMessage<'c>;

fn header_text(msg: &Record<'_>, name: &str) -> Option<String> {
    msg.headers()?
        .readable()
        .into_iter()
        .rev()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
        .map(str::to_owned)
}

/// A record of the batch's transaction, built while staging and sent once the transaction has
/// begun.
pub(crate) struct Outgoing {
    pub(crate) topic: String,
    /// `None`: the producer's partitioner places it by key.
    pub(crate) partition: Option<i32>,
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: OwnedHeaders,
    /// A dead letter: sent without its value, with headers that say where the input is
    /// (`dead_letter::slimmed`), when it is over the record limit whole.
    pub(crate) dead_letter: bool,
}

/// What one batch changes: its records, sent once its transaction has begun, and its states,
/// applied to memory once they are sent (see `transaction.rs`).
#[derive(Default)]
pub(crate) struct Staged {
    pub(crate) records: Vec<Outgoing>,
    pub(crate) states: HashMap<String, (i32, SagaState), crate::Ids>,
    /// The changelog values of `states`, as the transaction wrote them.
    pub(crate) encoded: HashMap<String, Vec<u8>, crate::Ids>,
    pub(crate) tombstones: Vec<(i32, String)>,
    pub(crate) index_sets: Vec<(i32, String, Due, Millis)>,
    pub(crate) index_cancels: Vec<(String, Due)>,
    pub(crate) next_offsets: BTreeMap<(String, i32), i64>,
    pub(crate) transitions: Vec<(String, Status, Status)>,
    pub(crate) lateness: Vec<f64>,
    /// Definitions of sagas that emitted a late compensation (a success after they were
    /// compensated), one entry each.
    pub(crate) late_compensations: Vec<String>,
    /// Definitions of sagas deleted after needing an operator for too long, one entry each.
    pub(crate) expired: Vec<String>,
    pub(crate) deliveries: Vec<DeliveryFuture>,
    pub(crate) dead_lettered: u64,
    pub(crate) inputs: BTreeMap<&'static str, u64>,
}

impl Runtime {
    /// The saga's state as this batch left it, or as last committed. A kept state that does
    /// not decode (it was decoded at restore or encoded here, so it cannot, short of a bug)
    /// restores the owned partitions from the changelog rather than start the saga afresh.
    pub(crate) fn current(
        &self,
        staged: &Staged,
        partition: i32,
        saga_id: &str,
    ) -> Result<Option<SagaState>, BatchError> {
        if let Some((_, s)) = staged.states.get(saga_id) {
            return Ok(Some(s.clone()));
        }
        let Some(stored) = self.owned.get(&partition).and_then(|m| m.get(saga_id)) else {
            return Ok(None);
        };
        stored.state().map(Some).map_err(|e| {
            BatchError::Recover(format!(
                "the state of saga {saga_id} kept in memory does not decode ({e}); restoring from the changelog"
            ))
        })
    }

    pub(crate) async fn stage(
        &mut self,
        batch: &[Record<'_>],
        due: &[crate::index::Entry],
        now: Millis,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        for msg in batch {
            staged
                .next_offsets
                .insert((msg.topic().to_owned(), msg.partition()), msg.offset() + 1);
            // A sweep record is a tombstone: only those have their headers read here (most
            // records' are read once, by the envelope, and only if a saga wants the event).
            if msg.payload().is_none()
                && choreo_bus::wire::envelope::is_transaction_sweep(msg.headers())
            {
                continue;
            }
            if msg.topic() == self.commands_topic {
                *staged.inputs.entry("command").or_default() += 1;
                self.stage_command(msg, now, staged).await?;
            } else {
                self.stage_event(msg, now, staged).await?;
            }
        }
        for entry in due {
            let Some(mut state) = self.current(staged, entry.partition, &entry.saga_id)? else {
                staged
                    .index_cancels
                    .push((entry.saga_id.clone(), entry.due.clone()));
                continue;
            };
            match &entry.due {
                Due::Expiry => {
                    let expired = self
                        .retention_of(&state)
                        .is_some_and(|keep| now >= state.updated_at.plus(keep));
                    if expired {
                        if state.status == Status::NeedsOperator {
                            tracing::error!(saga_id = %state.saga_id, correlation_id = %state.correlation_id, retention = %choreo_saga::format_duration(self.opts.needs_operator_retention), "a saga needed an operator for longer than coordinator.needs_operator_retention and nobody acted: it is deleted (its timeline is gone; its events are in their topics)");
                            staged.expired.push(state.definition.clone());
                        }
                        staged.states.remove(&entry.saga_id);
                        staged
                            .tombstones
                            .push((entry.partition, entry.saga_id.clone()));
                    } else {
                        staged
                            .index_cancels
                            .push((entry.saga_id.clone(), Due::Expiry));
                    }
                }
                Due::Deadline(kind) => {
                    *staged.inputs.entry("deadline").or_default() += 1;
                    staged
                        .lateness
                        .push(now.0.saturating_sub(entry.at.0) as f64 / 1000.0);
                    // The index entry goes whatever the saga decides; a re-armed deadline comes
                    // back as a SetDeadline action.
                    staged
                        .index_cancels
                        .push((entry.saga_id.clone(), entry.due.clone()));
                    let Some(def) = self.opts.definitions.for_state(&state).cloned() else {
                        continue;
                    };
                    let span = saga_span(&state, "deadline");
                    let _ = trace::join(&span, None);
                    let actions = apply(
                        &def,
                        &mut state,
                        &Input::Deadline { kind: kind.clone() },
                        now,
                    );
                    self.perform(entry.partition, &state, actions, None, &span, staged)
                        .await?;
                    self.stage_state(entry.partition, state, now, staged);
                }
            }
        }
        Ok(())
    }

    fn stage_state(&self, partition: i32, state: SagaState, now: Millis, staged: &mut Staged) {
        // Kept until nothing more is expected of it (a late compensation may still await its
        // acknowledgement after the saga is compensated), then for the retention; a saga that
        // needs an operator, for its own (long) retention after its last change.
        if let Some(keep) = self.retention_of(&state) {
            staged.index_sets.push((
                partition,
                state.saga_id.clone(),
                Due::Expiry,
                now.plus(keep),
            ));
        } else {
            staged
                .index_cancels
                .push((state.saga_id.clone(), Due::Expiry));
        }
        staged
            .states
            .insert(state.saga_id.clone(), (partition, state));
    }

    /// How long a saga in this state is kept after its last change: finished sagas for
    /// `completed_retention`, sagas that need an operator for `needs_operator_retention`,
    /// others until they finish (`None`).
    pub(crate) fn retention_of(&self, state: &SagaState) -> Option<std::time::Duration> {
        if state.is_finished() {
            Some(self.opts.completed_retention)
        } else if state.status == Status::NeedsOperator {
            Some(self.opts.needs_operator_retention)
        } else {
            None
        }
    }

    async fn stage_command(
        &mut self,
        msg: &Record<'_>,
        now: Millis,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        let record: CommandRecord = match msg.payload().map(serde_json::from_slice::<CommandRecord>)
        {
            Some(Ok(r)) => r,
            Some(Err(e)) => {
                self.dead_letter(msg, "malformed_command", &e.to_string(), staged);
                return Ok(());
            }
            None => {
                self.dead_letter(msg, "malformed_command", "empty value", staged);
                return Ok(());
            }
        };
        let saga_id = format!("{}/{}", record.definition, record.correlation_id);
        let Some(mut state) = self.current(staged, msg.partition(), &saga_id)? else {
            tracing::warn!(saga_id = %saga_id, command = ?record.command, "command for an unknown saga ignored");
            return Ok(());
        };
        let Some(def) = self.opts.definitions.for_state(&state).cloned() else {
            return Ok(());
        };
        let span = saga_span(&state, "command");
        let _ = trace::join(&span, None);
        // Applied once per command id, however often it is delivered.
        let actions = apply_command(&def, &mut state, &record.id, &record.command, now);
        if self.refuse_oversize(msg, &state, staged) {
            return Ok(());
        }
        if let [Action::Rejected { reason }] = actions.as_slice() {
            tracing::info!(saga_id = %saga_id, correlation_id = %record.correlation_id, command_id = %record.id, command = ?record.command, reason = %reason, "operator command refused");
        } else {
            tracing::info!(saga_id = %saga_id, correlation_id = %record.correlation_id, command_id = %record.id, command = ?record.command, operator = record.operator.as_deref().unwrap_or(""), "operator command applied");
        }
        self.perform(msg.partition(), &state, actions, None, &span, staged)
            .await?;
        self.stage_state(msg.partition(), state, now, staged);
        Ok(())
    }

    async fn stage_event(
        &mut self,
        msg: &Record<'_>,
        now: Millis,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        let Some(value) = msg.payload() else {
            self.dead_letter(msg, "truncated", "no value", staged);
            return Ok(());
        };
        // Asked before the transaction began (see `look_up_writer_schemas`): not again inside it.
        if let Ok((id, _)) = choreo_bus::wire::framing::unframe(value)
            && self.unknown_ids.contains(&id)
        {
            let unknown = DecodeError::UnknownSchemaId(id);
            self.dead_letter(msg, unknown.kind(), &unknown.to_string(), staged);
            return Ok(());
        }
        let definitions = &self.opts.definitions;
        let inputs = &mut staged.inputs;
        let decoded = self
            .codec
            .decode_json(value, &self.opts.catalog, |event_type| {
                let interested = definitions.interested_in(event_type);
                if interested.is_empty() {
                    return None;
                }
                *inputs.entry("event").or_default() += 1;
                Some(
                    interested
                        .into_iter()
                        .map(str::to_owned)
                        .collect::<Vec<_>>(),
                )
            })
            .await;
        let (
            JsonEvent {
                event_type, data, ..
            },
            interested,
        ) = match decoded {
            Ok(Some(decoded)) => decoded,
            // Another service's event (or one the coordinator emitted).
            Ok(None) => return Ok(()),
            Err(WriterSchemaError::Poison(decode)) => {
                self.dead_letter(msg, decode.kind(), &decode.to_string(), staged);
                return Ok(());
            }
            Err(WriterSchemaError::Unavailable(registry)) => {
                return Err(BatchError::Retry(format!("schema registry: {registry}")));
            }
        };
        let key = match msg.key().map(std::str::from_utf8) {
            Some(Ok(k)) => Some(k.to_owned()),
            Some(Err(_)) => {
                let invalid = DecodeError::InvalidKey(msg.key().map_or(0, <[u8]>::len));
                self.dead_letter(msg, invalid.kind(), &invalid.to_string(), staged);
                return Ok(());
            }
            None => None,
        };
        let envelope = match Envelope::read(msg.headers(), key.as_deref()) {
            Ok(e) => e,
            Err(invalid) => {
                self.dead_letter(msg, invalid.kind(), &invalid.to_string(), staged);
                return Ok(());
            }
        };
        // A record forwarded through the re-keying topic is for one definition, and keeps the
        // identity of where it first arrived.
        let rekeyed = msg.topic() == self.rekey_topic;
        let rekey_for = rekeyed
            .then(|| header_text(msg, REKEY_FOR_HEADER))
            .flatten();
        let id = if !envelope.id.is_empty() {
            envelope.id.clone()
        } else if let Some(from) = header_text(msg, REKEYED_FROM_HEADER) {
            from
        } else {
            format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset())
        };
        let time = Millis(
            msg.timestamp()
                .to_millis()
                .and_then(|t| u64::try_from(t).ok())
                .unwrap_or(now.0),
        );
        for name in interested {
            if rekeyed && rekey_for.as_deref() != Some(name.as_str()) {
                continue;
            }
            let Some(latest) = self.opts.definitions.latest(&name).cloned() else {
                continue;
            };
            let Some(correlation_id) = latest.correlation_id(key.as_deref(), &data) else {
                self.dead_letter(
                    msg,
                    "missing_key",
                    "no correlation id: the record has no key and no correlation field",
                    staged,
                );
                return Ok(());
            };
            // The saga lives on its correlation id's partition: an input that arrived on
            // another (keyed otherwise, correlated by a field, or produced with another
            // partitioner) goes there through the re-keying topic, in this transaction.
            let owner = partition_of(correlation_id.as_bytes(), self.partitions);
            if owner != msg.partition() && !rekeyed {
                self.forward(msg, &name, &correlation_id, owner, staged);
                continue;
            }
            let saga_id = format!("{name}/{correlation_id}");
            let mut state = match self.current(staged, msg.partition(), &saga_id)? {
                Some(s) => s,
                None => {
                    if matches!(
                        latest.role_of(&event_type),
                        Some(choreo_saga::Role::Ack(_)) | None
                    ) {
                        tracing::debug!(saga_id = %saga_id, event_type = %event_type, "acknowledgement for a saga that is not here (finished and expired?)");
                        continue;
                    }
                    if self.pending_sagas >= self.opts.max_pending_sagas
                        && !matches!(latest.role_of(&event_type), Some(choreo_saga::Role::Start))
                    {
                        self.dead_letter(
                            msg,
                            "no_saga",
                            &format!(
                                "no saga {saga_id} has started, and {} sagas of this replica wait for their start event already (coordinator.max_pending_sagas)",
                                self.pending_sagas
                            ),
                            staged,
                        );
                        return Ok(());
                    }
                    SagaState::new(&latest, correlation_id.clone(), now)
                }
            };
            let Some(def) = self.opts.definitions.for_state(&state).cloned() else {
                tracing::error!(saga_id = %saga_id, version = state.version, "the definition version this saga is pinned to is not loaded; input skipped");
                continue;
            };
            let input = Input::Event(Event {
                id: id.clone(),
                event_type: event_type.clone(),
                correlation_id: correlation_id.clone(),
                time,
                data: data.clone(),
            });
            // A child of the input's traceparent: what the saga emits names this span.
            let span = saga_span(&state, "event");
            span.record("event_type", event_type.as_str());
            let _ = trace::join(&span, envelope.traceparent);
            let actions = apply(&def, &mut state, &input, now);
            if self.refuse_oversize(msg, &state, staged) {
                return Ok(());
            }
            self.perform(
                msg.partition(),
                &state,
                actions,
                Some(&envelope),
                &span,
                staged,
            )
            .await?;
            self.stage_state(msg.partition(), state, now, staged);
        }
        Ok(())
    }

    /// Forwards `msg` for definition `name` to partition `owner` of the re-keying topic, keyed
    /// by its correlation id, with its value and headers (and where it first arrived).
    fn forward(
        &self,
        msg: &Record<'_>,
        name: &str,
        correlation_id: &str,
        owner: i32,
        staged: &mut Staged,
    ) {
        let mut headers = OwnedHeaders::new();
        if let Some(h) = msg.headers() {
            for x in h
                .readable()
                .into_iter()
                .filter(|x| x.key != REKEY_FOR_HEADER)
            {
                headers = headers.insert(Header {
                    key: x.key,
                    value: x.value,
                });
            }
        }
        let from = format!("{}/{}/{}", msg.topic(), msg.partition(), msg.offset());
        headers = headers.insert(Header {
            key: REKEY_FOR_HEADER,
            value: Some(name),
        });
        if header_text(msg, REKEYED_FROM_HEADER).is_none() {
            headers = headers.insert(Header {
                key: REKEYED_FROM_HEADER,
                value: Some(from.as_str()),
            });
        }
        tracing::debug!(saga = %name, correlation_id, from = %from, to_partition = owner, "input forwarded to the partition that owns its saga");
        *staged.inputs.entry("forwarded").or_default() += 1;
        staged.records.push(Outgoing {
            topic: self.rekey_topic.clone(),
            partition: Some(owner),
            key: Some(correlation_id.as_bytes().to_vec()),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
            dead_letter: false,
        });
    }

    async fn perform(
        &mut self,
        partition: i32,
        state: &SagaState,
        actions: Vec<Action>,
        cause: Option<&Envelope>,
        span: &tracing::Span,
        staged: &mut Staged,
    ) -> Result<(), BatchError> {
        let recorded = trace::recorded(span);
        // A saga counts as compensated once: when its cancellation is emitted (a compensated
        // saga whose late compensation went unacknowledged comes back to compensated later).
        let cancelled = actions
            .iter()
            .any(|a| matches!(a, Action::Emit(e) if e.kind == EmitKind::Aborted));
        for action in actions {
            match action {
                Action::Emit(e) => {
                    if e.late_compensation {
                        tracing::warn!(saga_id = %state.saga_id, correlation_id = %state.correlation_id, step = e.step.as_deref().unwrap_or(""), event_type = %e.event_type, "late compensation: a step succeeded after the saga was compensated; compensating it, the status stays terminal");
                        staged.late_compensations.push(state.definition.clone());
                    }
                    let bytes = self
                        .codec
                        .encode_json(&e.topic, &self.opts.catalog, &e.event_type, &e.data)
                        .await
                        .map_err(|err| match err {
                            BusError::Encode { .. } => {
                                BatchError::Fatal(CoordinatorError::Startup(format!(
                                    "saga {} emits {}: {err}",
                                    state.saga_id, e.event_type
                                )))
                            }
                            other => BatchError::Retry(other.to_string()),
                        })?;
                    let envelope = Envelope::caused_by(
                        cause,
                        e.event_id.to_string(),
                        format!("/choreo/sagas/{}", state.definition),
                        e.event_type.clone(),
                        e.key.clone(),
                    );
                    tracing::debug!(saga_id = %state.saga_id, correlation_id = %e.key, event_type = %e.event_type, event_id = %envelope.id, kind = ?e.kind, attempt = e.attempt, "emit");
                    // With OpenTelemetry the event names the saga's span, else a child id in
                    // the cause's trace.
                    let headers = envelope.to_headers_traced(recorded.or(envelope.traceparent));
                    staged.records.push(Outgoing {
                        topic: e.topic,
                        partition: None,
                        key: Some(e.key.into_bytes()),
                        value: Some(bytes),
                        headers,
                        dead_letter: false,
                    });
                }
                Action::SetDeadline(d) => staged.index_sets.push((
                    partition,
                    state.saga_id.clone(),
                    Due::Deadline(d.kind),
                    d.at,
                )),
                Action::CancelDeadline { kind } => staged
                    .index_cancels
                    .push((state.saga_id.clone(), Due::Deadline(kind))),
                Action::Status { from, to, reason } => {
                    tracing::info!(saga_id = %state.saga_id, correlation_id = %state.correlation_id, from = ?from, to = ?to, reason = %reason, "saga status");
                    let counted =
                        to != Status::Compensated || from == Status::Compensating || cancelled;
                    if counted {
                        staged
                            .transitions
                            .push((state.definition.clone(), from, to));
                    }
                }
                Action::Rejected { reason } => {
                    tracing::debug!(saga_id = %state.saga_id, correlation_id = %state.correlation_id, reason = %reason, "input rejected");
                }
            }
        }
        Ok(())
    }

    /// Dead-letters `msg` instead of staging `state` when a large input would make the state
    /// larger than [`MAX_STATE_BYTES`] (inputs under [`MEASURE_INPUTS_FROM`] are not measured).
    fn refuse_oversize(&self, msg: &Record<'_>, state: &SagaState, staged: &mut Staged) -> bool {
        if msg.payload().map_or(0, <[u8]>::len) < MEASURE_INPUTS_FROM {
            return false;
        }
        let size = state.encode().len();
        if size <= MAX_STATE_BYTES {
            return false;
        }
        self.dead_letter(
            msg,
            "state_too_large",
            &format!(
                "saga {} would grow to {size} bytes, over the {MAX_STATE_BYTES}-byte limit",
                state.saga_id
            ),
            staged,
        );
        true
    }

    /// Sends a poison input to `<topic>.dlq`, in the same transaction as the batch.
    fn dead_letter(&self, msg: &Record<'_>, kind: &'static str, reason: &str, staged: &mut Staged) {
        let why = choreo_bus::dead_letter::Reason {
            kind,
            message: reason.to_owned(),
            handler: Some("saga-coordinator".to_owned()),
            attempts: 1,
        };
        let headers = choreo_bus::dead_letter::headers_for(msg, &why, &self.opts.group_id);
        tracing::warn!(topic = msg.topic(), partition = msg.partition(), offset = msg.offset(), correlation_id = %String::from_utf8_lossy(msg.key().unwrap_or_default()), kind, reason, "input dead-lettered");
        staged.records.push(Outgoing {
            topic: format!("{}.dlq", msg.topic()),
            partition: None,
            key: msg.key().map(<[u8]>::to_vec),
            value: msg.payload().map(<[u8]>::to_vec),
            headers,
            dead_letter: true,
        });
        staged.dead_lettered += 1;
    }
}

/// The span of one input applied to one saga (`choreo.saga`): with OpenTelemetry, a child of
/// the input event's trace, and the parent of what the saga emits for it.
fn saga_span(state: &SagaState, input: &'static str) -> tracing::Span {
    tracing::info_span!(
        "choreo.saga",
        otel.name = %format!("{} apply", state.definition),
        otel.kind = "consumer",
        saga_id = %state.saga_id,
        correlation_id = %state.correlation_id,
        saga.version = state.version,
        saga.input = input,
        event_type = tracing::field::Empty,
    )
}
