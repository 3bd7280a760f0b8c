//! Compiling a [`SagaSpec`] against the event catalog into a [`Definition`]: the saga's own
//! fields, step names, the role of each consumed event, dependencies (no cycles), and the
//! emissions' mapping plans — each a function of its own, in that order.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use choreo_schemas::{Catalog, EventInfo};

use crate::error::SagaError;
use crate::state::MAX_STEP_NAME_BYTES;

use super::plans::{MapCtx, known};
use super::spec::{Invalid, Owner, SagaSpec, StepSpec, Where, invalid};
use super::{Compensation, Definition, Role, Step};

impl SagaSpec {
    /// Validates against the catalog and compiles.
    pub fn build(self, catalog: &Catalog) -> Result<Definition, SagaError> {
        let name = self.name.clone();
        compile(self, catalog).map_err(|e| SagaError::Invalid {
            saga: name,
            reason: e.reason,
        })
    }
}

/// Validates and compiles a spec; errors say where (for the loader) and why.
pub(crate) fn compile(spec: SagaSpec, catalog: &Catalog) -> Result<Definition, Invalid> {
    let start_info = check_top(&spec, catalog)?;
    let index = step_index(&spec.steps)?;
    let roles = roles(&spec, catalog)?;
    let after = dependencies(&spec.steps, &index)?;
    let ctx = MapCtx {
        catalog,
        start: start_info,
        steps: &spec.steps,
        index: &index,
    };
    let steps = compile_steps(&spec.steps, &after, &ctx)?;
    let on_complete = match &spec.on_complete {
        Some(e) => Some(ctx.emission(e, Owner::OnComplete, "", "on_complete")?),
        None => None,
    };
    let on_abort = match &spec.on_abort {
        Some(e) => Some(ctx.emission(e, Owner::OnAbort, "", "on_abort")?),
        None => None,
    };
    Ok(Definition {
        name: spec.name,
        version: spec.version,
        start: spec.start,
        correlation: spec.correlation,
        deadline: spec.deadline,
        steps,
        on_complete,
        on_abort,
        roles,
        start_collects: BTreeSet::new(),
    }
    .with_collected_fields())
}

/// The saga's own fields: a name, a version, a positive deadline, a known start event, and
/// at least one step. Returns the start event.
fn check_top<'c>(spec: &SagaSpec, catalog: &'c Catalog) -> Result<&'c EventInfo, Invalid> {
    if spec.name.trim().is_empty() {
        return invalid(Where::Top("name"), "the saga needs a non-empty name");
    }
    if spec.version == 0 {
        return invalid(Where::Top("version"), "version must be 1 or more");
    }
    if spec.deadline == Some(Duration::ZERO) {
        return invalid(
            Where::Top("deadline"),
            "the deadline must be greater than zero",
        );
    }
    let start_info = known(catalog, &spec.start, Where::Top("start"), "start event")?;
    if spec.steps.is_empty() {
        return invalid(Where::Top("steps"), "a saga needs at least one step");
    }

    Ok(start_info)
}

/// Step names: non-empty, bounded, not reserved, distinct. Returns each name's index.
fn step_index(steps: &[StepSpec]) -> Result<BTreeMap<&str, usize>, Invalid> {
    let mut index: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, s) in steps.iter().enumerate() {
        if s.name.trim().is_empty() || s.name.contains('.') {
            return invalid(
                Where::StepName(i),
                format!(
                    "step name \"{}\" must be non-empty and contain no '.'",
                    s.name
                ),
            );
        }
        if s.name.len() > MAX_STEP_NAME_BYTES {
            return invalid(
                Where::StepName(i),
                format!(
                    "step name \"{}\" is longer than {MAX_STEP_NAME_BYTES} bytes",
                    crate::state::bounded(&s.name, 40)
                ),
            );
        }
        if matches!(s.name.as_str(), "start" | "saga") {
            return invalid(
                Where::StepName(i),
                format!("step name \"{}\" is reserved for mappings", s.name),
            );
        }
        if index.insert(s.name.as_str(), i).is_some() {
            return invalid(Where::StepName(i), format!("duplicate step \"{}\"", s.name));
        }
    }

    Ok(index)
}

/// The role of every consumed event (start, a step's success or failure, a compensation's
/// acknowledgement): each known to the catalog and used once; positive step deadlines.
fn roles(spec: &SagaSpec, catalog: &Catalog) -> Result<BTreeMap<String, Role>, Invalid> {
    let mut roles: BTreeMap<String, Role> = BTreeMap::new();
    let mut owner_of: BTreeMap<String, String> = BTreeMap::new();
    roles.insert(spec.start.clone(), Role::Start);
    owner_of.insert(spec.start.clone(), "the start event".into());
    let mut claim = |event: &str, role: Role, what: String, at: Where| -> Result<(), Invalid> {
        if let Some(first) = owner_of.get(event) {
            return invalid(at, format!("{what} {event} is already used as {first}"));
        }
        roles.insert(event.to_owned(), role);
        owner_of.insert(event.to_owned(), what);
        Ok(())
    };
    for (i, s) in spec.steps.iter().enumerate() {
        let step = &s.name;
        if s.success.is_empty() {
            return invalid(
                Where::StepName(i),
                format!("step \"{step}\": needs at least one success event"),
            );
        }
        for (key, list) in [("success", &s.success), ("failure", &s.failure)] {
            for (j, event) in list.iter().enumerate() {
                let at = Where::StepList {
                    step: i,
                    key,
                    index: j,
                };
                let what = format!("step \"{step}\": {key} event");
                known(catalog, event, at.clone(), &what)?;
                let role = if key == "success" {
                    Role::Success(i)
                } else {
                    Role::Failure(i)
                };
                claim(
                    event,
                    role,
                    format!("the {key} event of step \"{step}\""),
                    at,
                )?;
            }
        }
        if let Some(ack) = s.compensation.as_ref().and_then(|c| c.ack.as_ref()) {
            let what = format!("step \"{step}\": compensation acknowledgement");
            known(catalog, ack, Where::StepAck(i), &what)?;
            claim(
                ack,
                Role::Ack(i),
                format!("the acknowledgement of step \"{step}\"'s compensation"),
                Where::StepAck(i),
            )?;
        }
        if let Some(d) = &s.deadline
            && d.within.is_zero()
        {
            return invalid(
                Where::StepName(i),
                format!("step \"{step}\": the deadline must be greater than zero"),
            );
        }
        if let Some(c) = &s.compensation
            && c.ack.is_some()
            && c.ack_deadline.is_zero()
        {
            return invalid(
                Where::StepAck(i),
                format!("step \"{step}\": the acknowledgement deadline must be greater than zero"),
            );
        }
    }

    Ok(roles)
}

/// Each step's `after` list as indexes: known steps, no step waiting for itself, no cycle
/// (reported from its first-defined step).
fn dependencies(
    steps: &[StepSpec],
    index: &BTreeMap<&str, usize>,
) -> Result<Vec<Vec<usize>>, Invalid> {
    let mut after: Vec<Vec<usize>> = Vec::with_capacity(steps.len());
    for (i, s) in steps.iter().enumerate() {
        let mut deps = Vec::new();
        for (j, dep) in s.after.iter().enumerate() {
            let at = Where::StepList {
                step: i,
                key: "after",
                index: j,
            };
            match index.get(dep.as_str()) {
                Some(&d) if d == i => {
                    return invalid(at, format!("step \"{}\": waits for itself", s.name));
                }
                Some(&d) => deps.push(d),
                None => {
                    return invalid(
                        at,
                        format!("step \"{}\": waits for unknown step \"{dep}\"", s.name),
                    );
                }
            }
        }
        after.push(deps);
    }
    if let Some(mut path) = find_cycle(&after) {
        // Report the cycle from its first-defined step, at its `after` entry for the next.
        path.pop();
        let min = path
            .iter()
            .enumerate()
            .min_by_key(|&(_, &k)| k)
            .map_or(0, |(at, _)| at);
        path.rotate_left(min);
        let i = path[0];
        let next = path.get(1).copied().unwrap_or(i);
        let j = after[i].iter().position(|&d| d == next).unwrap_or(0);
        path.push(i);
        let names: Vec<&str> = path.iter().map(|&k| steps[k].name.as_str()).collect();
        return invalid(
            Where::StepList {
                step: i,
                key: "after",
                index: j,
            },
            format!(
                "step \"{}\": dependency cycle {}",
                steps[i].name,
                names.join(" -> ")
            ),
        );
    }
    Ok(after)
}

/// The compiled steps: their emissions (on start, compensation) mapped against the catalog,
/// and who depends on each.
fn compile_steps(
    specs: &[StepSpec],
    after: &[Vec<usize>],
    ctx: &MapCtx<'_>,
) -> Result<Vec<Step>, Invalid> {
    let dependents: Vec<Vec<usize>> = (0..specs.len())
        .map(|i| transitive_dependents(after, i))
        .collect();

    let mut steps = Vec::with_capacity(specs.len());
    for (i, s) in specs.iter().enumerate() {
        let label = format!("step \"{}\": ", s.name);
        let on_start = match &s.on_start {
            Some(e) => Some(ctx.emission(e, Owner::StepStart(i), &label, "on_start")?),
            None => None,
        };
        let compensation = match &s.compensation {
            Some(c) => Some(Compensation {
                emit: ctx.emission(&c.emit, Owner::Compensation(i), &label, "compensation")?,
                ack: c.ack.clone(),
                ack_deadline: c.ack_deadline,
                max_retries: c.max_retries,
                on_unknown_outcome: c.on_unknown_outcome,
            }),
            None => None,
        };
        steps.push(Step {
            name: s.name.clone(),
            success: s.success.clone(),
            failure: s.failure.clone(),
            after: after[i].clone(),
            dependents: dependents[i].clone(),
            collects: BTreeSet::new(),
            deadline: s.deadline,
            on_start,
            compensation,
        });
    }
    Ok(steps)
}

/// Finds a dependency cycle: the steps on it, the first repeated at the end.
fn find_cycle(after: &[Vec<usize>]) -> Option<Vec<usize>> {
    // 0 = unvisited, 1 = on the stack, 2 = done.
    fn visit(
        n: usize,
        after: &[Vec<usize>],
        color: &mut [u8],
        stack: &mut Vec<usize>,
    ) -> Option<Vec<usize>> {
        color[n] = 1;
        stack.push(n);
        for &d in &after[n] {
            if color[d] == 1 {
                let from = stack.iter().position(|&k| k == d).unwrap_or(0);
                let mut path: Vec<usize> = stack[from..].to_vec();
                path.push(d);
                return Some(path);
            }
            if color[d] == 0
                && let Some(found) = visit(d, after, color, stack)
            {
                return Some(found);
            }
        }
        stack.pop();
        color[n] = 2;
        None
    }
    let mut color = vec![0u8; after.len()];
    for n in 0..after.len() {
        if color[n] == 0 {
            let mut stack = Vec::new();
            if let Some(found) = visit(n, after, &mut color, &mut stack) {
                return Some(found);
            }
        }
    }
    None
}

fn transitive_dependents(after: &[Vec<usize>], of: usize) -> Vec<usize> {
    let mut found: BTreeSet<usize> = BTreeSet::new();
    let mut frontier = vec![of];
    while let Some(n) = frontier.pop() {
        for (k, deps) in after.iter().enumerate() {
            if deps.contains(&n) && found.insert(k) {
                frontier.push(k);
            }
        }
    }
    found.into_iter().collect()
}
