//! Why the hub refused a submission, and why a stored group state could not be read.

use conclave_core::ids::CredentialIdentity;

/// Why the hub refused a group creation, commit, proposal or application message.
/// Nothing of a refused submission changes the group. Each variant is one reason, so
/// the gRPC layer can map it to its own status code (stale epoch to ABORTED, future
/// epoch to FAILED_PRECONDITION, the rest mostly to INVALID_ARGUMENT or
/// PERMISSION_DENIED).
#[derive(Debug, thiserror::Error)]
pub(crate) enum HubRejection {
    /// The bytes are not a TLS-encoded MLSMessage (RFC 9420 §6), or more bytes follow it.
    #[error("{what} is not a valid MLSMessage: {reason}")]
    MalformedMessage {
        /// What the message was submitted as: "commit", "proposal", "application message".
        what: &'static str,
        reason: String,
    },
    /// A handshake message (commit or proposal) arrived as anything but a PublicMessage;
    /// the hub can only validate handshakes it can read.
    #[error("{what} must be sent as a PublicMessage, not as a {found}")]
    NotPublicMessage {
        what: &'static str,
        /// The wire format it came in, such as "PrivateMessage".
        found: &'static str,
    },
    /// An application message arrived as anything but a PrivateMessage.
    #[error("application message must be sent as a PrivateMessage, not as a {found}")]
    NotPrivateMessage {
        /// The wire format it came in, such as "PublicMessage".
        found: &'static str,
    },
    /// The message is well formed but carries another kind of content than the call
    /// expects (a proposal submitted as a commit, say).
    #[error("the message submitted as a {what} carries a {found}")]
    WrongContentType {
        what: &'static str,
        /// The content type it carries: "commit", "proposal" or "application message".
        found: &'static str,
    },
    /// The message names another group.
    #[error("{what} is for group {found} but was submitted to group {expected}")]
    WrongGroup {
        what: &'static str,
        /// The group id in the message, in hex.
        found: String,
        /// The group id it was submitted to, in hex.
        expected: String,
    },
    /// Too many proposals wait for a commit in this epoch.
    #[error("the group already has {limit} proposals waiting for a commit in this epoch")]
    TooManyProposals { limit: u64 },
    /// The commit would take the group past the configured size.
    #[error("the group would have {would_have} members, more than the limit of {limit}")]
    TooManyMembers { would_have: u64, limit: u64 },
    /// The message is for an epoch that has ended: another commit won it. (Only
    /// handshakes can be stale; old application messages get [`Self::EpochOutsideWindow`].)
    #[error("message is for epoch {message_epoch} but the group is at epoch {current_epoch}")]
    StaleEpoch {
        message_epoch: u64,
        current_epoch: u64,
    },
    /// The message is for an epoch the group has not reached.
    #[error("message is for epoch {message_epoch} but the group is only at epoch {current_epoch}")]
    FutureEpoch {
        message_epoch: u64,
        current_epoch: u64,
    },
    /// An application message for an epoch older than the configured window allows.
    #[error(
        "application message is for epoch {message_epoch} but the group is at epoch \
         {current_epoch} and accepts only the last {window} past epochs"
    )]
    EpochOutsideWindow {
        message_epoch: u64,
        current_epoch: u64,
        window: u64,
    },
    /// The message claims to come from a leaf that holds no member.
    #[error("{what} claims to come from leaf {leaf_index}, which holds no member of the group")]
    NotAMember { what: &'static str, leaf_index: u32 },
    /// A proposal from a sender that is not a member (an external sender or a new
    /// member proposing to join); Conclave accepts proposals from members only.
    #[error("proposals are accepted only from members, not from a {sender} sender")]
    NonMemberProposal {
        /// The sender type, such as "external" or "new member".
        sender: &'static str,
    },
    /// The leaf that sent the message belongs to another device than the caller.
    #[error("{what} is sent by {signer} but the caller is {caller}")]
    SenderNotCaller {
        what: &'static str,
        /// The identity in the sending leaf's credential.
        signer: Box<CredentialIdentity>,
        /// The authenticated device that submitted it.
        caller: Box<CredentialIdentity>,
    },
    /// The commit is not valid for the group's public state (openmls's verification
    /// refused it, or it breaks one of Conclave's own rules on leaves).
    #[error("commit is invalid: {0}")]
    InvalidCommit(String),
    /// The proposal is not valid for the group's public state.
    #[error("proposal is invalid: {0}")]
    InvalidProposal(String),
    /// An external commit that the hub does not allow: only a device of a user who
    /// already has a device in the group may join by external commit, as itself.
    #[error("external commit is not allowed: {0}")]
    ExternalJoinNotAllowed(String),
    /// The commit adds members but no Welcome came with it.
    #[error("the commit adds {added} members but no welcome was submitted")]
    MissingWelcome {
        /// How many key packages the commit adds.
        added: usize,
    },
    /// A Welcome came with a commit that adds nobody.
    #[error("a welcome was submitted but the commit adds no members")]
    UnexpectedWelcome,
    /// The Welcome is not addressed to exactly the key packages the commit adds.
    #[error(
        "the welcome is addressed to {found} key packages that are not exactly the \
         {expected} key packages the commit adds"
    )]
    WelcomeRecipientsMismatch {
        /// How many key packages the commit adds.
        expected: usize,
        /// How many recipients the welcome names.
        found: usize,
    },
    /// The Welcome is malformed or cannot be for this group.
    #[error("welcome is invalid: {0}")]
    InvalidWelcome(String),
    /// The GroupInfo submitted with a commit is malformed, is for another group or
    /// epoch, does not describe the epoch the commit creates, or does not verify.
    #[error("group info is invalid: {0}")]
    InvalidGroupInfo(String),
    /// The GroupInfo and ratchet tree of a new group do not make a valid group whose
    /// only member is the creator.
    #[error("group creation is invalid: {0}")]
    InvalidCreation(String),
    /// `apply_commit` was given a decision made against another state of the group
    /// (a programming error in the caller: a decision must be applied to the state it
    /// was checked against, under the same lock).
    #[error("the commit decision does not fit this group state: {0}")]
    DecisionMismatch(String),
    /// openmls could not write the group's public state to its in-memory storage.
    #[error("the group's public state could not be updated: {0}")]
    Storage(String),
}

/// A stored group state that cannot be read back: the bytes were damaged, or written
/// by an incompatible version.
#[derive(Debug, thiserror::Error)]
#[error("stored hub group state is corrupt: {0}")]
pub(crate) struct CorruptState(pub(crate) String);

/// openmls's error messages start with a capital and end with a period; ours are
/// lowercase sentences without one, so its text is adjusted before being embedded.
pub(crate) fn describe(error: &impl std::fmt::Display) -> String {
    let text = error.to_string();
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}
