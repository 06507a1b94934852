//! Fetching from the hub what this homeserver's copy of a group lacks: a gap
//! before a delivered batch, the commit a device lost its race to, and at start
//! everything new.

use super::super::Context;
use super::apply_batch::apply_events;
use super::{Applied, FollowerError, check_wire_batch, log_refusal};
use crate::rules::ids::{GroupId, Seq};
use crate::store;
use conclave_core::ids::Domain;
use conclave_federation::client::{CallError, RefusalKind};

/// Brings this copy of a group up to `until_seq` with events fetched from the
/// hub, unless it has them already. For a device told that its commit lost
/// the epoch to the commit at `until_seq`: it fetches that commit next, here,
/// and the hub's outbox may not have delivered it yet (still in flight, or
/// waiting out a backoff or this homeserver's rate limit). Without it, the
/// device would rebuild its commit on the old epoch and lose again, until it
/// gives up.
pub(crate) async fn catch_up(
    context: &Context,
    hub: &Domain,
    mls_group_id: &GroupId,
    until_seq: Seq,
) -> Result<(), FollowerError> {
    let Some(group) = store::find_group_header(&context.store, mls_group_id).await? else {
        return Ok(());
    };
    if group.last_seq >= until_seq {
        return Ok(());
    }
    let result = repair(context, hub, mls_group_id, group.last_seq, until_seq.next()).await;
    if let Err(error) = &result {
        log_refusal(hub, mls_group_id, error);
    }
    result.map(drop)
}

/// At start: asks the hub of every group followed here for what it has after
/// this copy's end, and applies it. The hubs' outboxes would deliver it too,
/// but possibly only after their backoff from when this homeserver was down;
/// the request also tells each hub that this homeserver is back.
pub(crate) async fn catch_up_on_start(context: &Context) {
    let Some(federation) = context.federation.as_ref() else {
        return;
    };
    let followed = match store::followed_groups(&context.store).await {
        Ok(followed) => followed,
        Err(error) => {
            tracing::warn!(%error, "could not list followed groups to catch up");
            return;
        }
    };
    let mut unreachable = std::collections::BTreeSet::new();
    for (mls_group_id, hub, mut have) in followed {
        if unreachable.contains(&hub) {
            continue;
        }
        let Ok(hub_domain) = hub.parse::<Domain>() else {
            continue;
        };
        let group = mls_group_id.clone();
        loop {
            let answer = federation
                .fetch_events(&hub_domain, mls_group_id.as_bytes().to_vec(), have.get(), 0)
                .await;
            let answer = match answer {
                Ok(answer) => answer,
                Err(error @ CallError::Unavailable { .. }) => {
                    tracing::info!(hub_domain = %hub, %error, "hub unreachable; its outbox will deliver");
                    unreachable.insert(hub.clone());
                    break;
                }
                Err(error) => {
                    tracing::info!(hub_domain = %hub, %group, %error, "could not catch up a group at start");
                    break;
                }
            };
            if answer.events.is_empty() {
                break;
            }
            let outcome = match check_wire_batch(&context.domain, &mls_group_id, answer.events) {
                Ok(events) => {
                    apply_events(context, &hub_domain, &mls_group_id, &events, 0, false).await
                }
                Err(error) => Err(error.into()),
            };
            match outcome {
                Ok(Applied::Through(last_seq)) if last_seq > have => {
                    have = last_seq;
                    if have.get() >= answer.last_seq {
                        break;
                    }
                }
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(hub_domain = %hub, %group, %error, "could not apply a group's events at start");
                    break;
                }
            }
        }
    }
}

/// Fetches and applies the events between `have` and `next_seq` from the hub.
/// Returns true if the hub no longer has them (pruned by its retention): the
/// gap is then accepted, and the devices here recover by rejoining.
pub(super) async fn repair(
    context: &Context,
    hub: &Domain,
    mls_group_id: &GroupId,
    mut have: Seq,
    next_seq: Seq,
) -> Result<bool, FollowerError> {
    let group = mls_group_id.clone();
    let failed = |have, reason: String| FollowerError::RepairFailed {
        group: group.clone(),
        have,
        reason,
    };
    let Some(federation) = context.federation.as_ref() else {
        return Err(failed(have, "federation is off".to_owned()));
    };
    tracing::warn!(hub_domain = %hub, %group, %have, %next_seq, "repairing a gap in a group's copy");
    while have.next() < next_seq {
        let answer = federation
            .fetch_events(hub, mls_group_id.as_bytes().to_vec(), have.get(), 0)
            .await;
        let answer = match answer {
            Ok(answer) => answer,
            Err(CallError::Refused {
                kind: RefusalKind::OutOfRange,
                message,
                ..
            }) => {
                tracing::warn!(hub_domain = %hub, %group, %have, %message, "the hub pruned the missing events; accepting the gap");
                return Ok(true);
            }
            Err(error) => return Err(failed(have, error.to_string())),
        };
        let missing: Vec<_> = answer
            .events
            .into_iter()
            .take_while(|event| event.seq < next_seq.get())
            .collect();
        if missing.is_empty() {
            return Err(failed(have, "the hub sent no events".to_owned()));
        }
        let missing = check_wire_batch(&context.domain, mls_group_id, missing)?;
        match apply_events(context, hub, mls_group_id, &missing, 0, false).await? {
            Applied::Through(last_seq) if last_seq > have => have = last_seq,
            _ => {
                return Err(failed(
                    have,
                    "the hub's events did not continue the copy".to_owned(),
                ));
            }
        }
    }
    Ok(false)
}
