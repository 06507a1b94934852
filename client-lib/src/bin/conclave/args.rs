//! The command line, as clap parses it.

// The doc comments below are clap's help text, read in a terminal, where a URL
// in angle brackets or backticks would look odd.
#![allow(rustdoc::bare_urls)]

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use conclave_client::ServerUrl;
use conclave_core::ids::{DeviceId, UserId, Username};

/// Default for `keys publish --count`: the replenish target.
const DEFAULT_PUBLISH_COUNT: u16 = 50;

/// Conclave: end-to-end encrypted group messaging on MLS (RFC 9420).
///
/// Every command prints human-readable text, or with --json one JSON object on
/// stdout (listen and chat: one per message or membership change, as they
/// arrive). Group and message
/// commands first fetch what is new (invitations, messages, commits). GROUP is a
/// group's name, as `groups` shows it, or its hex id.
///
/// Exit status: 0 done; 1 failed, with one line on stderr starting with
/// "error:"; 2 a malformed command line; 75 (send) the message could not be
/// sent now (the homeserver unreachable, its certificate refused, ...), but it
/// is kept and goes out with this device's next send, groups, listen, chat or
/// group command that gets through: do not send it again (one line on stderr
/// says so, and why).
#[derive(Debug, Parser)]
#[command(name = "conclave", version)]
pub(crate) struct Cli {
    /// Homeserver URL, e.g. https://chat.example.org. Needed once: it is
    /// remembered in the state. Plain http:// only to localhost, 127.0.0.0/8, ::1.
    /// Several addresses of one homeserver (its replicas), comma-separated or
    /// repeated: the first is the one to enrol on; listen, chat and sending
    /// move to the next when the one in use goes away.
    #[arg(
        long,
        global = true,
        env = "CONCLAVE_SERVER",
        value_name = "URL",
        value_delimiter = ','
    )]
    pub(crate) server: Vec<ServerUrl>,

    /// PEM file of a CA to trust for https:// homeservers, besides the
    /// system's trust store (e.g. a private or enterprise CA). Repeatable. Not
    /// remembered: give it to every command.
    #[arg(long, global = true, env = "CONCLAVE_CA_FILE", value_name = "FILE")]
    pub(crate) ca_file: Vec<PathBuf>,

    /// Directory of this device's state (keys, session). Default:
    /// ~/.local/share/conclave.
    #[arg(long, global = true, env = "CONCLAVE_STATE", value_name = "DIR")]
    pub(crate) state: Option<PathBuf>,

    /// Print one JSON object on stdout instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,

    /// Log to stderr (-v: this program at debug level, -vv: everything at debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create an account on the homeserver and enrol this device.
    Register {
        /// The new username (the part before @): lowercase letters, digits, '.', '_', '-'.
        user: Username,
        /// Token from the homeserver's operator, if registration needs one
        /// (`--registration-token=TOKEN` is safe whatever the token holds).
        #[arg(long, value_name = "TOKEN", allow_hyphen_values = true)]
        registration_token: Option<String>,
        #[command(flatten)]
        device: DeviceArgs,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// Enrol this device into an existing account.
    Login {
        /// Username, or full user id (alice@example.org).
        user: String,
        #[command(flatten)]
        device: DeviceArgs,
        #[command(flatten)]
        password: PasswordArgs,
    },
    /// End this device's session and forget its keys (the server URL is kept).
    Logout,
    /// Show who this device is, as the homeserver sees it.
    Whoami,
    /// List your devices, or remove one.
    Devices {
        #[command(subcommand)]
        action: Option<DevicesCommand>,
    },
    /// Manage key packages (what others need to add you to groups).
    Keys {
        #[command(subcommand)]
        action: KeysCommand,
    },
    /// Create a group, manage its members, rotate your keys in it.
    Group {
        #[command(subcommand)]
        action: GroupCommand,
    },
    /// List your groups (after fetching what is new, such as invitations).
    Groups,
    /// Send a text message to a group.
    Send {
        /// The group: its name, as `groups` shows it, or its hex id.
        group: String,
        /// The message. Read from stdin when absent or "-".
        text: Option<String>,
    },
    /// Print messages and membership changes (joined, left, removed, rotated)
    /// as they arrive (with --json, one JSON object per line).
    Listen {
        /// Only this group's messages (name or hex id); default: all groups.
        group: Option<String>,
        /// Stop after this many seconds (an error if --count was not reached).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<u64>,
        /// Stop after this many messages (membership changes are shown but
        /// not counted).
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Chat in a group: lines read from stdin are sent, incoming messages and
    /// membership changes shown.
    Chat {
        /// The group: its name or its hex id.
        group: String,
    },
    /// Print the shell completion script for SHELL on stdout (see README,
    /// "Shell completions and manual pages"). Touches no state.
    Completions {
        /// The shell to complete in.
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) on stdout, or write one page per command
    /// into a directory. Touches no state.
    Man {
        /// Write `conclave.1` and a page per subcommand here (created if
        /// missing) instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Show a group's history from the local state: messages (yours included)
    /// and membership changes, oldest first. Local only; marks nothing read.
    ///
    /// To page back, pass the "seq" of the first (oldest) entry shown as the
    /// next --before (--json gives it as "next_before"), until a page is
    /// empty: pages never split a log position, so nothing is skipped or
    /// shown twice.
    History {
        /// The group: its name or its hex id.
        group: String,
        /// At most this many entries: the newest ones. A page holds every entry
        /// of its oldest log position (a commit adding several devices makes
        /// one entry per device), so it can hold a few more.
        #[arg(long, value_name = "N", default_value_t = 50)]
        limit: usize,
        /// Only entries before this position in the group's log, to page back:
        /// the "next_before" of the previous page's --json (its oldest entry's
        /// "seq").
        #[arg(long, value_name = "SEQ")]
        before: Option<u64>,
    },
    /// Show or change this device's settings.
    Settings {
        /// Keep messages in the local state after they are shown (on, the
        /// default), or delete them once shown (off: also deletes what is kept).
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        history: Option<bool>,
    },
}

fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".to_owned()),
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum GroupCommand {
    /// Create a group with you as its only member.
    Create {
        /// The group's name, shown to every member (1 to 64 characters).
        name: String,
        /// The group's MLS cipher suite, for good: only devices with a key
        /// package of it can join.
        #[arg(long, value_enum, default_value_t = SuiteArg::Classic)]
        cipher_suite: SuiteArg,
    },
    /// Add every device of each user to a group (your own user id adds your
    /// other devices).
    Invite {
        /// The group: its name or its hex id.
        group: String,
        /// Users as name@domain.
        #[arg(required = true)]
        users: Vec<UserId>,
    },
    /// Remove every device of a user from a group.
    Remove {
        /// The group: its name or its hex id.
        group: String,
        /// The user, as name@domain.
        user: UserId,
    },
    /// Leave a group (another member's client completes it).
    Leave {
        /// The group: its name or its hex id.
        group: String,
    },
    /// Replace your keys in a group (a self-update, for post-compromise security).
    Rotate {
        /// The group: its name or its hex id.
        group: String,
    },
    /// List a group's member devices.
    Members {
        /// The group: its name or its hex id.
        group: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum DevicesCommand {
    /// Remove another of your devices (its session ends, its key packages go).
    Remove {
        /// The device id, as `devices` lists it.
        device_id: DeviceId,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Publish new key packages, plus a new last-resort package.
    Publish {
        /// How many ordinary key packages.
        #[arg(long, default_value_t = DEFAULT_PUBLISH_COUNT, value_parser = clap::value_parser!(u16).range(0..=1000))]
        count: u16,
    },
    /// Show how many of your key packages the homeserver still holds.
    Status,
    /// Claim one key package per device of a user (diagnostics: uses them up).
    Claim {
        /// The user, as name@domain.
        user_id: UserId,
    },
}

#[derive(Debug, Args)]
pub(crate) struct DeviceArgs {
    /// Name shown in your device list. Default: this machine's host name.
    #[arg(long, value_name = "N")]
    pub(crate) device_name: Option<String>,
    /// Do not keep messages in the local state once shown (a setting of the
    /// state directory; `settings --history on` turns it back on).
    #[arg(long)]
    pub(crate) no_history: bool,
}

#[derive(Debug, Args)]
pub(crate) struct PasswordArgs {
    /// Read the password from the first line of FILE. Otherwise it comes from
    /// $CONCLAVE_PASSWORD, or is asked for on the terminal.
    #[arg(long, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn options_may_follow_the_subcommand() {
        let cli =
            Cli::try_parse_from(["conclave", "keys", "status", "--json", "--state", "/x"]).unwrap();
        assert!(cli.json);
        assert_eq!(cli.state, Some(PathBuf::from("/x")));
        assert!(matches!(
            cli.command,
            Command::Keys {
                action: KeysCommand::Status
            }
        ));
    }

    #[test]
    fn group_commands_parse() {
        let cli = Cli::try_parse_from([
            "conclave",
            "group",
            "invite",
            "team",
            "bob@b.example",
            "carol@c.example",
        ])
        .unwrap();
        let Command::Group {
            action: GroupCommand::Invite { group, users },
        } = cli.command
        else {
            panic!("{cli:?}");
        };
        assert_eq!(group, "team");
        assert_eq!(users.len(), 2);
        let cli =
            Cli::try_parse_from(["conclave", "listen", "--count", "3", "--timeout", "10"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Listen {
                group: None,
                timeout: Some(10),
                count: Some(3)
            }
        ));
        let cli = Cli::try_parse_from(["conclave", "send", "team"]).unwrap();
        assert!(matches!(cli.command, Command::Send { text: None, .. }));
        let cli = Cli::try_parse_from(["conclave", "history", "team", "--before", "9"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::History {
                limit: 50,
                before: Some(9),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["conclave", "settings", "--history", "off"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Settings {
                history: Some(false)
            }
        ));
    }

    #[test]
    fn several_servers_may_be_given() {
        let cli = Cli::try_parse_from([
            "conclave",
            "--server",
            "http://127.0.0.1:1,http://127.0.0.2:1",
            "--server",
            "http://127.0.0.3:1",
            "listen",
        ])
        .unwrap();
        let servers: Vec<String> = cli.server.iter().map(ToString::to_string).collect();
        assert_eq!(
            servers,
            [
                "http://127.0.0.1:1",
                "http://127.0.0.2:1",
                "http://127.0.0.3:1"
            ]
        );
        let cli = Cli::try_parse_from(["conclave", "whoami"]).unwrap();
        assert!(cli.server.is_empty());
    }

    #[test]
    fn malformed_arguments_are_usage_errors() {
        for args in [
            &["conclave", "register", "Alice"][..],
            &["conclave", "keys", "claim", "bob"],
            &["conclave", "--server", "http://chat.example.org", "whoami"],
            &["conclave", "devices", "remove", "xyz"],
            &["conclave", "keys", "publish", "--count", "5000"],
            &["conclave", "group", "invite", "team"],
            &["conclave", "group", "remove", "team", "bob"],
            &["conclave", "listen", "--count", "many"],
            &["conclave", "settings", "--history", "maybe"],
            &["conclave", "history"],
        ] {
            let error = Cli::try_parse_from(args).unwrap_err();
            assert_eq!(error.exit_code(), 2, "{args:?}");
        }
    }
}

/// The cipher suites `group create --cipher-suite` offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum SuiteArg {
    /// 0x0001, MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519 (RFC 9420's
    /// mandatory suite).
    Classic,
    /// 0x004F, MLS_128_MLKEM768X25519_AES128GCM_SHA256_Ed25519: post-quantum
    /// (hybrid ML-KEM-768 + X25519 key exchange).
    Pq,
}

impl From<SuiteArg> for conclave_client::CipherSuite {
    fn from(suite: SuiteArg) -> Self {
        match suite {
            SuiteArg::Classic => conclave_client::CipherSuite::Classic,
            SuiteArg::Pq => conclave_client::CipherSuite::PostQuantum,
        }
    }
}
