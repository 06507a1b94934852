//! ListGroups: the groups hosted here and this domain's copies of groups
//! hosted elsewhere, most recently active first, a page at a time; all of
//! them, those whose id starts with some hex digits, or those a user's
//! devices are in. Read-only, so not audited.

use super::AdminError;
use super::group_name::group_name;
use super::paging::Page;
use crate::rules::group_search::{ActivityKey, parse_group_search};
use crate::service::Context;
use crate::store::{self, AdminGroupRecord};

/// Groups per page unless the caller asks otherwise, and at most.
pub(crate) const DEFAULT_PAGE_SIZE: u32 = 50;
pub(crate) const MAX_PAGE_SIZE: u32 = 200;

/// A group as listed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct AdminGroupSummary {
    /// The MLS group id (in hex in JSON).
    #[serde(serialize_with = "hex_string")]
    pub(crate) group_id: Vec<u8>,
    /// From the group context, where the hub (this server) can see it.
    pub(crate) name: Option<String>,
    pub(crate) hub_domain: String,
    pub(crate) hosted_here: bool,
    pub(crate) epoch: u64,
    /// Current member devices (at a follower: this domain's).
    pub(crate) member_devices: u64,
    pub(crate) last_seq: u64,
    /// Milliseconds since the Unix epoch.
    pub(crate) last_activity_at_ms: i64,
}

impl AdminGroupSummary {
    pub(crate) fn of(context: &Context, record: &AdminGroupRecord) -> AdminGroupSummary {
        AdminGroupSummary {
            group_id: record.group_id.as_bytes().to_vec(),
            name: group_name(&record.state),
            hub_domain: record
                .hub_domain
                .clone()
                .unwrap_or_else(|| context.domain.to_string()),
            hosted_here: record.hub_domain.is_none(),
            epoch: record.epoch.get(),
            member_devices: record.member_devices,
            last_seq: record.last_seq.get(),
            last_activity_at_ms: record.last_activity_at_ms,
        }
    }
}

/// Bytes as a hex string, for people and scripts.
fn hex_string<S: serde::Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&hex::encode(bytes))
}

/// One page of groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupPage {
    pub(crate) groups: Vec<AdminGroupSummary>,
    /// Empty on the last page.
    pub(crate) next_page_token: String,
}

/// The page of groups `query` selects (see `rules::group_search`).
pub(crate) async fn list_groups(
    context: &Context,
    query: &str,
    page_size: u32,
    page_token: &str,
) -> Result<GroupPage, AdminError> {
    let search =
        parse_group_search(query).map_err(|error| AdminError::Invalid(error.to_string()))?;
    let page = Page::parse(page_size, page_token, DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)?;
    let after = page
        .after
        .as_deref()
        .map(|key| {
            ActivityKey::from_page_key(key).ok_or_else(|| {
                AdminError::Invalid(
                    "page_token is not a token this listing gave; pass the next_page_token of the previous page, or none for the first".to_owned(),
                )
            })
        })
        .transpose()?;
    let mut records =
        store::list_admin_groups(&context.store, &search, after, page.fetch_limit()).await?;
    let next_page_token = page.finish(&mut records, |record| record.activity_key().to_page_key());
    Ok(GroupPage {
        groups: records
            .iter()
            .map(|record| AdminGroupSummary::of(context, record))
            .collect(),
        next_page_token,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ids::{Epoch, GroupId, Seq};
    use crate::service::SystemClock;
    use crate::service::admin::tests::context_on;
    use crate::store::{EventKind, NewEvent, NewMember};
    use conclave_test_support::{DatabaseChoice, TestDatabase};
    use std::sync::Arc;

    /// A hosted group `id` created at `created_at_ms`.
    async fn group(context: &Context, id: &[u8], created_at_ms: i64) -> crate::store::HostedGroup {
        store::insert_group(
            &context.store,
            &GroupId::from(id),
            Epoch::new(0),
            Vec::new(),
            "creator@a.example/00000000000000c1",
            created_at_ms,
        )
        .await
        .unwrap()
        .unwrap()
    }

    /// The hex ids of a page, and its next page token.
    async fn listed(
        context: &Context,
        query: &str,
        size: u32,
        token: &str,
    ) -> (Vec<String>, String) {
        let page = list_groups(context, query, size, token).await.unwrap();
        let ids = page
            .groups
            .iter()
            .map(|group| hex::encode(&group.group_id))
            .collect();
        (ids, page.next_page_token)
    }

    #[tokio::test]
    async fn groups_are_listed_most_recently_active_first_by_id_or_member() {
        for choice in DatabaseChoice::ALL {
            let database = TestDatabase::create(choice).await;
            let context = context_on(&database, Arc::new(SystemClock)).await;
            let ab01 = group(&context, &[0xab, 0x01], 10).await;
            group(&context, &[0xab, 0x02], 40).await;
            let cd = group(&context, &[0xcd], 30).await;
            group(&context, &[0xab], 20).await;
            // A commit at 50 makes cd the most recently active, and its last
            // commit; the UPDATE that moves last_seq reads the event's time.
            let transaction = context.store.begin().await.unwrap();
            store::append_event(
                &transaction,
                NewEvent {
                    group: cd.key,
                    seq: Seq::new(1),
                    kind: EventKind::Commit,
                    epoch: Epoch::new(0),
                    sender_identity: "creator@a.example/00000000000000c1",
                    message: b"commit",
                    now_ms: 50,
                    trace_parent: None,
                    message_digest: None,
                },
            )
            .await
            .unwrap();
            store::update_group(
                &transaction,
                cd.key,
                Epoch::new(1),
                Seq::new(1),
                store::NewState::Unchanged,
            )
            .await
            .unwrap();
            // bob's device is in ab01, and was in cd.
            for (group, removed) in [(ab01.key, false), (cd.key, true)] {
                let member = NewMember {
                    identity: "bob@a.example/00000000000000b1",
                    user_id: "bob@a.example",
                    device_id: "00000000000000b1",
                    joined_after_seq: Seq::ZERO,
                    remote_domain: None,
                };
                store::upsert_member(&transaction, group, member)
                    .await
                    .unwrap();
                if removed {
                    store::mark_removed(&transaction, group, member_identity(), Seq::new(1))
                        .await
                        .unwrap();
                }
            }
            transaction.commit().await.unwrap();

            let (first, next) = listed(&context, "", 2, "").await;
            assert_eq!(first, ["cd", "ab02"], "{choice:?}");
            let (second, last) = listed(&context, "", 2, &next).await;
            assert_eq!(second, ["ab", "ab01"], "{choice:?}");
            assert!(last.is_empty());
            for (query, expected) in [
                ("ab", vec!["ab02", "ab", "ab01"]),
                ("AB0", vec!["ab02", "ab01"]),
                ("ab01", vec!["ab01"]),
                ("c", vec!["cd"]),
                ("e", vec![]),
                ("bob@a.example", vec!["ab01"]),
                ("carol@a.example", vec![]),
            ] {
                assert_eq!(
                    listed(&context, query, 10, "").await.0,
                    expected,
                    "{choice:?}: {query}"
                );
            }

            let page = list_groups(&context, "cd", 10, "").await.unwrap();
            let summary = &page.groups[0];
            assert_eq!(summary.epoch, 1);
            assert_eq!(summary.last_seq, 1);
            assert_eq!(summary.last_activity_at_ms, 50);
            assert_eq!(summary.member_devices, 0, "bob was removed");
            assert_eq!(summary.hub_domain, "a.example");
            assert!(summary.hosted_here);
            let record = store::find_admin_group(&context.store, &GroupId::from(&[0xcd][..]))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (record.created_at_ms, record.last_commit_at_ms),
                (30, Some(50))
            );
            let ab01 = list_groups(&context, "ab01", 10, "").await.unwrap();
            assert_eq!(ab01.groups[0].member_devices, 1);

            for (query, token, fragment) in [
                ("xyz", "", "neither hex digits of a group id nor a user id"),
                ("@a.example", "", "is not a valid user id"),
                ("", "%%%", "page_token"),
                ("", "bm90IGEga2V5", "page_token"),
            ] {
                let refused = list_groups(&context, query, 10, token).await;
                assert!(
                    matches!(&refused, Err(AdminError::Invalid(message)) if message.contains(fragment)),
                    "{query:?} {token:?}: {refused:?}"
                );
            }
            let refused = list_groups(&context, "", MAX_PAGE_SIZE + 1, "").await;
            assert!(
                matches!(refused, Err(AdminError::Invalid(_))),
                "{refused:?}"
            );
        }
    }

    fn member_identity() -> &'static str {
        "bob@a.example/00000000000000b1"
    }
}
