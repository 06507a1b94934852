//! Proposals by reference: checked against the current epoch and kept in the proposal
//! store until a commit covers them or the epoch ends.

use conclave_core::ids::CredentialIdentity;
use openmls::prelude::{ProcessedMessageContent, Proposal, Sender};

use super::HubGroup;
use super::error::{HubRejection, describe};
use super::leaves::{new_leaf, same_device};
use super::messages::decode_handshake;

impl HubGroup {
    /// Validates a proposal (a PublicMessage for this group and its current epoch, sent
    /// by the calling device's leaf and accepted by openmls) and keeps it in the
    /// proposal store, which is saved with the state, until a commit covers it or the
    /// epoch ends. A proposal that brings a leaf must name a device, and an Update must
    /// keep the proposer's device; whether an added device is registered and its key
    /// package claimed is checked when a commit covers the Add.
    pub(crate) fn add_proposal(
        &mut self,
        sender: &CredentialIdentity,
        proposal: &[u8],
    ) -> Result<(), HubRejection> {
        const WHAT: &str = "proposal";
        let public_message =
            decode_handshake(proposal, WHAT, self.public_group.group_id(), self.epoch())?;
        let leaf_index = match public_message.sender() {
            Sender::Member(leaf_index) => *leaf_index,
            Sender::External(_) => {
                return Err(HubRejection::NonMemberProposal { sender: "external" });
            }
            Sender::NewMemberProposal | Sender::NewMemberCommit => {
                return Err(HubRejection::NonMemberProposal {
                    sender: "new member",
                });
            }
        };
        let identity = self
            .member_identity(leaf_index)
            .ok_or(HubRejection::NotAMember {
                what: WHAT,
                leaf_index: leaf_index.u32(),
            })?;
        if &identity != sender {
            return Err(HubRejection::SenderNotCaller {
                what: WHAT,
                signer: Box::new(identity),
                caller: Box::new(sender.clone()),
            });
        }

        let processed = self
            .public_group
            .process_message(&self.crypto, public_message)
            .map_err(|error| HubRejection::InvalidProposal(describe(&error)))?;
        let ProcessedMessageContent::ProposalMessage(queued_proposal) = processed.into_content()
        else {
            return Err(HubRejection::InvalidProposal(
                "openmls did not queue it as a proposal".to_owned(),
            ));
        };
        match queued_proposal.proposal() {
            Proposal::Add(add) => {
                new_leaf(add.key_package().leaf_node(), None)
                    .map_err(HubRejection::InvalidProposal)?;
            }
            Proposal::Update(update) => {
                let new_leaf =
                    new_leaf(update.leaf_node(), None).map_err(HubRejection::InvalidProposal)?;
                same_device(&identity, &new_leaf.identity)
                    .map_err(HubRejection::InvalidProposal)?;
            }
            _ => {}
        }
        self.public_group
            .add_proposal(&self.storage, *queued_proposal)
            .map_err(|error| HubRejection::Storage(describe(&error)))
    }
}
