//! `conclave.client.v1.DeliveryService`: proto <-> domain conversion only.

use super::auth::authenticate;
use super::timestamp;
use crate::rules::ids::{GroupId, Seq};
use crate::rules::limits::{MAX_ACK_GROUPS, check_count};
use crate::service::Context;
use crate::service::delivery::{self, Acks, ConnectionKey, Delivery, SUBSCRIBER_BUFFER};
use crate::store::EventKind;
use conclave_proto::client::v1 as proto;
use conclave_proto::client::v1::delivery_service_server::DeliveryService;
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::{Stream, StreamExt, wrappers::ReceiverStream};
use tonic::{Request, Response, Status};

pub(crate) struct DeliveryApi {
    pub(crate) context: Arc<Context>,
}

fn delivery_to_proto(delivery: Delivery) -> proto::DeliveryEvent {
    let event = match delivery {
        Delivery::Group { group_id, event } if event.kind == EventKind::Departure => {
            // The hub wrote it: no device sent it, and it carries no MLS message.
            proto::delivery_event::Event::GroupEvent(proto::GroupEvent {
                group_id: group_id.as_bytes().to_vec(),
                seq: event.seq.get(),
                server_time: Some(timestamp(event.created_at_ms)),
                departure: Some(proto::DepartureNotice {
                    credential_identity: event.sender_identity,
                    reason: String::from_utf8_lossy(&event.message).into_owned(),
                }),
                ..Default::default()
            })
        }
        Delivery::Group { group_id, event } => {
            let (sender_user_id, sender_device_id) = event
                .sender_identity
                .rsplit_once('/')
                .map(|(user, device)| (user.to_owned(), device.to_owned()))
                .unwrap_or_default();
            proto::delivery_event::Event::GroupEvent(proto::GroupEvent {
                group_id: group_id.as_bytes().to_vec(),
                seq: event.seq.get(),
                message: event.message,
                sender_user_id,
                sender_device_id,
                server_time: Some(timestamp(event.created_at_ms)),
                departure: None,
            })
        }
        Delivery::Inbox { group_id, event } => {
            proto::delivery_event::Event::InboxEvent(proto::InboxEvent {
                seq: event.seq.get(),
                server_time: Some(timestamp(event.created_at_ms)),
                event: Some(proto::inbox_event::Event::Welcome(proto::WelcomeEvent {
                    group_id: group_id.into_bytes(),
                    welcome: event.welcome,
                    ratchet_tree: event.ratchet_tree,
                    commit_seq: event.commit_seq.get(),
                })),
            })
        }
    };
    proto::DeliveryEvent { event: Some(event) }
}

/// The request's connection, by its addresses (tonic puts them in the request's
/// extensions, with TLS and without); `None` on a transport without addresses.
fn connection_key<T>(request: &Request<T>) -> Option<ConnectionKey> {
    Some(ConnectionKey {
        local: request.local_addr()?,
        remote: request.remote_addr()?,
    })
}

type EventStream = Pin<Box<dyn Stream<Item = Result<proto::DeliveryEvent, Status>> + Send>>;

#[tonic::async_trait]
impl DeliveryService for DeliveryApi {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let slot = delivery::open_stream(&self.context, &device, connection_key(&request))?;
        let (sender, receiver) = tokio::sync::mpsc::channel(SUBSCRIBER_BUFFER);
        tokio::spawn(delivery::subscribe(
            self.context.clone(),
            device,
            slot,
            sender,
        ));
        let stream = ReceiverStream::new(receiver)
            .map(|item| (*item).map(delivery_to_proto).map_err(Status::from));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn fetch(
        &self,
        request: Request<proto::FetchRequest>,
    ) -> Result<Response<proto::FetchResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let limit = request.into_inner().limit;
        let events = delivery::fetch(&self.context, &device, limit)
            .await?
            .into_iter()
            .map(delivery_to_proto)
            .collect();
        Ok(Response::new(proto::FetchResponse { events }))
    }

    async fn ack(
        &self,
        request: Request<proto::AckRequest>,
    ) -> Result<Response<proto::AckResponse>, Status> {
        let device = authenticate(&self.context, request.metadata()).await?;
        let request = request.into_inner();
        check_count("groups", request.groups.len(), MAX_ACK_GROUPS)?;
        let acks = Acks {
            groups: request
                .groups
                .into_iter()
                .map(|ack| (GroupId::new(ack.group_id), Seq::new(ack.seq)))
                .collect(),
            inbox_seq: Seq::new(request.inbox_seq),
        };
        delivery::ack(&self.context, &device, acks).await?;
        Ok(Response::new(proto::AckResponse {}))
    }
}
