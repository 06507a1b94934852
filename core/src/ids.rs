//! Identifier newtypes, parsed once at the edge and trusted afterwards.
//!
//! A user is `name@domain`; a device is identified by 16 lowercase hex digits chosen
//! by its homeserver; the MLS credential identity of a device is
//! `name@domain/device_id`, which is what every member of a group sees as the sender.
//!
//! Names that people choose and others read (display names) follow
//! [`normalize_display_text`]: no control characters, no bidirectional controls, no
//! invisible characters, and NFC. Usernames are stricter still (lowercase ASCII), so
//! they can hold none of those; a refused username names its first bad character.

use std::fmt;
use std::str::FromStr;
use unicode_normalization::UnicodeNormalization as _;

/// Shortest and longest allowed username.
pub const USERNAME_LENGTH: std::ops::RangeInclusive<usize> = 1..=32;
/// Longest allowed domain name (RFC 1035's limit on a full name).
pub const MAX_DOMAIN_LENGTH: usize = 253;
/// Number of hex digits in a device id.
pub const DEVICE_ID_HEX_DIGITS: usize = 16;

/// Most characters of an input echoed into an error message; the rest is cut
/// and marked with an ellipsis, so a hostile or mistaken 100 KB value cannot
/// make an error message (a gRPC header) too large to send.
pub const MAX_ECHO_CHARS: usize = 64;

/// `input` as an error message shows it: whole if at most [`MAX_ECHO_CHARS`]
/// characters long, else its first [`MAX_ECHO_CHARS`] characters and `…`.
pub fn echo(input: &str) -> String {
    match input.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!("{}…", &input[..cut]),
        None => input.to_owned(),
    }
}

/// Why an identifier was refused. The messages name the offending input (cut by
/// [`echo`]), so they can be shown to the user as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The username breaks the character or length rules.
    #[error(
        "username {0:?} is invalid: use 1 to 32 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit"
    )]
    Username(String),
    /// The username holds a character usernames may not hold (any but `a-z 0-9 . _ -`).
    #[error(
        "username {username:?} is invalid: it contains {}, which usernames may not contain; use 1 to 32 lowercase letters, digits, '.', '_' or '-', starting with a letter or digit",
        CodePoint(*character)
    )]
    UsernameCharacter { username: String, character: char },
    /// The domain is not a valid lowercase DNS name.
    #[error(
        "domain {0:?} is invalid: use a lowercase DNS name such as example.org (labels of letters, digits and '-', separated by '.')"
    )]
    Domain(String),
    /// The user id is not `name@domain`.
    #[error("user id {0:?} is invalid: expected name@domain, for example alice@example.org")]
    UserId(String),
    /// The device id is not 16 lowercase hex digits.
    #[error("device id {0:?} is invalid: expected 16 lowercase hex digits")]
    DeviceId(String),
    /// The credential identity is not `name@domain/device_id`.
    #[error("credential identity {0:?} is invalid: expected name@domain/device_id")]
    CredentialIdentity(String),
}

/// The local part of a user id: 1 to 32 of `a-z 0-9 . _ -`, starting with a letter
/// or digit (so it can never look like an option or a hidden file in tools).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Username(String);

impl Username {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Username {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
        if let Some(character) = input.chars().find(|&c| !allowed(c)) {
            return Err(IdError::UsernameCharacter {
                username: echo(input),
                character,
            });
        }
        let starts_well = input
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if USERNAME_LENGTH.contains(&input.len()) && starts_well && input.chars().all(allowed) {
            Ok(Username(input.to_owned()))
        } else {
            Err(IdError::Username(echo(input)))
        }
    }
}

/// A character written as Unicode writes it: `U+202E`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodePoint(pub char);

impl fmt::Display for CodePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", u32::from(self.0))
    }
}

/// Why a character may not appear in a name shown to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenCharacterKind {
    /// A C0 or C1 control character (`\n`, `\t`, DEL, ...).
    Control,
    /// U+2028 LINE SEPARATOR or U+2029 PARAGRAPH SEPARATOR: breaks the line it is
    /// shown on.
    LineBreak,
    /// A bidirectional control: embeddings and overrides (U+202A to U+202E),
    /// isolates (U+2066 to U+2069), the marks U+200E, U+200F and U+061C. They
    /// reorder what is shown after them ("Trojan Source").
    Bidirectional,
    /// A character with no glyph that a reader cannot see: zero-width space and
    /// joiners (U+200B to U+200D), word joiner and invisible operators (U+2060 to
    /// U+2064), the byte-order mark U+FEFF, soft hyphen, fillers, tags and the rest
    /// of Unicode's default-ignorable characters.
    Invisible,
    /// A variation selector that does not directly follow a visible character, or
    /// follows another one: only one selector may choose the form of the character
    /// before it (as U+FE0F does for emoji), never a run of them (which can carry
    /// hidden data).
    StrayVariationSelector,
}

impl fmt::Display for HiddenCharacterKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            HiddenCharacterKind::Control => "a control character",
            HiddenCharacterKind::LineBreak => "a line or paragraph separator",
            HiddenCharacterKind::Bidirectional => "a bidirectional control",
            HiddenCharacterKind::Invisible => "an invisible character",
            HiddenCharacterKind::StrayVariationSelector => {
                "a variation selector that does not directly follow a visible character"
            }
        })
    }
}

/// A character a name shown to people may not contain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} ({kind})", CodePoint(*character))]
pub struct HiddenCharacter {
    pub character: char,
    pub kind: HiddenCharacterKind,
}

/// Variation selectors: U+FE00 to U+FE0F and U+E0100 to U+E01EF.
fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}')
}

/// What makes `c` unfit for a name shown to people, whatever surrounds it
/// (variation selectors, which depend on their neighbour, are judged by
/// [`normalize_display_text`]).
pub fn hidden_character_kind(c: char) -> Option<HiddenCharacterKind> {
    use HiddenCharacterKind::*;
    match c {
        c if c.is_control() => Some(Control),
        '\u{2028}' | '\u{2029}' => Some(LineBreak),
        '\u{061C}'
        | '\u{200E}'
        | '\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2066}'..='\u{2069}' => Some(Bidirectional),
        // Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt), less
        // the bidirectional controls above and the variation selectors, plus the
        // interlinear annotation characters, which hide the text they annotate.
        '\u{00AD}'
        | '\u{034F}'
        | '\u{115F}'..='\u{1160}'
        | '\u{17B4}'..='\u{17B5}'
        | '\u{180B}'..='\u{180F}'
        | '\u{200B}'..='\u{200D}'
        | '\u{2060}'..='\u{2065}'
        | '\u{206A}'..='\u{206F}'
        | '\u{3164}'
        | '\u{FEFF}'
        | '\u{FFA0}'
        | '\u{FFF0}'..='\u{FFFB}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0000}'..='\u{E00FF}'
        | '\u{E01F0}'..='\u{E0FFF}' => Some(Invisible),
        _ => None,
    }
}

/// The rule for a name shown to people (a device's display name; the client also
/// applies it to group names): it may not contain control characters, line or
/// paragraph separators, bidirectional controls, or invisible characters (see
/// [`HiddenCharacterKind`]); a variation selector is allowed only directly after a
/// visible character that has none yet (so emoji such as U+2764 U+FE0F work).
/// Zero-width joiners are refused, and with them emoji written as joined sequences.
/// Returns the name in Unicode Normalization Form C, so that names that look the
/// same are stored the same; the first refused character is the error.
pub fn normalize_display_text(input: &str) -> Result<String, HiddenCharacter> {
    let mut previous_is_visible = false;
    for character in input.chars() {
        let kind = if is_variation_selector(character) {
            (!previous_is_visible).then_some(HiddenCharacterKind::StrayVariationSelector)
        } else {
            hidden_character_kind(character)
        };
        if let Some(kind) = kind {
            return Err(HiddenCharacter { character, kind });
        }
        previous_is_visible = !is_variation_selector(character);
    }
    Ok(input.nfc().collect())
}

/// A homeserver's domain: a lowercase DNS name such as `a.example`, or `localhost`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Domain {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let valid_label = |label: &str| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if input.len() <= MAX_DOMAIN_LENGTH && input.split('.').all(valid_label) {
            Ok(Domain(input.to_owned()))
        } else {
            Err(IdError::Domain(echo(input)))
        }
    }
}

/// A user, `name@domain`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId {
    username: Username,
    domain: Domain,
}

impl UserId {
    pub fn new(username: Username, domain: Domain) -> Self {
        UserId { username, domain }
    }

    pub fn username(&self) -> &Username {
        &self.username
    }

    pub fn domain(&self) -> &Domain {
        &self.domain
    }
}

impl FromStr for UserId {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let invalid = || IdError::UserId(echo(input));
        let (name, domain) = input.split_once('@').ok_or_else(invalid)?;
        Ok(UserId {
            username: name.parse().map_err(|_| invalid())?,
            domain: domain.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.username.0, self.domain.0)
    }
}

/// A device, as 16 lowercase hex digits (64 random bits chosen by the homeserver).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Makes a device id from 8 random bytes; the caller supplies the randomness so
    /// this module stays free of I/O.
    pub fn from_random_bytes(bytes: [u8; 8]) -> Self {
        DeviceId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for DeviceId {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let hex = |c: char| c.is_ascii_digit() || ('a'..='f').contains(&c);
        if input.len() == DEVICE_ID_HEX_DIGITS && input.chars().all(hex) {
            Ok(DeviceId(input.to_owned()))
        } else {
            Err(IdError::DeviceId(echo(input)))
        }
    }
}

/// The identity inside a device's MLS BasicCredential: `name@domain/device_id`.
/// Its homeserver binds it to the device's signature key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CredentialIdentity {
    user_id: UserId,
    device_id: DeviceId,
}

impl CredentialIdentity {
    pub fn new(user_id: UserId, device_id: DeviceId) -> Self {
        CredentialIdentity { user_id, device_id }
    }

    pub fn user_id(&self) -> &UserId {
        &self.user_id
    }

    pub fn device_id(&self) -> &DeviceId {
        &self.device_id
    }

    /// Parses the raw bytes of a BasicCredential's identity.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdError> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| IdError::CredentialIdentity(echo(&String::from_utf8_lossy(bytes))))?;
        text.parse()
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }
}

impl FromStr for CredentialIdentity {
    type Err = IdError;

    fn from_str(input: &str) -> Result<Self, IdError> {
        let invalid = || IdError::CredentialIdentity(echo(input));
        let (user, device) = input.rsplit_once('/').ok_or_else(invalid)?;
        Ok(CredentialIdentity {
            user_id: user.parse().map_err(|_| invalid())?,
            device_id: device.parse().map_err(|_| invalid())?,
        })
    }
}

impl fmt::Display for CredentialIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.user_id, self.device_id.0)
    }
}

macro_rules! display_as_str {
    ($($name:ident),*) => {$(
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
display_as_str!(Username, Domain, DeviceId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_inputs_are_echoed_cut_with_an_ellipsis() {
        assert_eq!(echo("bob"), "bob");
        let exactly = "é".repeat(MAX_ECHO_CHARS);
        assert_eq!(echo(&exactly), exactly);
        let long = "é".repeat(100_000);
        assert_eq!(echo(&long), format!("{}…", "é".repeat(MAX_ECHO_CHARS)));
        let error = long.parse::<Username>().expect_err("too long");
        assert!(error.to_string().len() < 300, "{error}");
        assert!(
            error
                .to_string()
                .ends_with("starting with a letter or digit")
        );
    }

    fn check<T: FromStr<Err = IdError> + fmt::Display>(input: &str, valid: bool) {
        match input.parse::<T>() {
            Ok(parsed) => {
                assert!(valid, "{input:?} was accepted");
                assert_eq!(parsed.to_string(), input, "round trip");
            }
            Err(error) => assert!(!valid, "{input:?} was refused: {error}"),
        }
    }

    #[test]
    fn usernames() {
        for (input, valid) in [
            ("alice", true),
            ("a", true),
            ("bob.smith_2-x", true),
            ("0day", true),
            (&"a".repeat(32), true),
            (&"a".repeat(33), false),
            ("", false),
            ("Alice", false),
            ("-alice", false),
            (".alice", false),
            ("al ice", false),
            ("alice@x", false),
            ("alïce", false),
            ("al/ice", false),
        ] {
            check::<Username>(input, valid);
        }
    }

    #[test]
    fn usernames_name_their_first_bad_character() {
        for (input, character) in [
            ("al\u{202E}ice", '\u{202E}'),
            ("alice\u{200B}", '\u{200B}'),
            ("Alice", 'A'),
            ("al ice", ' '),
            ("alïce", 'ï'),
        ] {
            let error = input.parse::<Username>().unwrap_err();
            assert_eq!(
                error,
                IdError::UsernameCharacter {
                    username: echo(input),
                    character
                },
                "{input:?}"
            );
        }
        let message = "al\u{202E}ice".parse::<Username>().unwrap_err().to_string();
        assert!(message.contains("U+202E"), "{message}");
        assert!(
            !message.contains('\u{202E}'),
            "the message echoes it: {message}"
        );
    }

    fn check_text(input: &str, expected: Result<&str, (char, HiddenCharacterKind)>) {
        let result = normalize_display_text(input);
        let expected = expected
            .map(str::to_owned)
            .map_err(|(character, kind)| HiddenCharacter { character, kind });
        assert_eq!(result, expected, "{input:?}");
    }

    #[test]
    fn display_text() {
        use HiddenCharacterKind::*;
        for (input, expected) in [
            ("", Ok("")),
            ("Alice's laptop", Ok("Alice's laptop")),
            ("Zoë's téléphone", Ok("Zoë's téléphone")),
            ("عمر", Ok("عمر")),
            ("Ελένη 🙂", Ok("Ελένη 🙂")),
            // NFC: e + COMBINING ACUTE ACCENT becomes é; Hangul jamo compose.
            ("e\u{301}", Ok("\u{E9}")),
            ("\u{1100}\u{1161}", Ok("\u{AC00}")),
            // One variation selector after a visible character.
            ("\u{2764}\u{FE0F}", Ok("\u{2764}\u{FE0F}")),
            ("\u{845B}\u{E0100}", Ok("\u{845B}\u{E0100}")),
            ("\u{FE0F}heart", Err(('\u{FE0F}', StrayVariationSelector))),
            (
                "a\u{FE0F}\u{FE0E}",
                Err(('\u{FE0E}', StrayVariationSelector)),
            ),
            (
                "a\u{E0100}\u{E0101}",
                Err(('\u{E0101}', StrayVariationSelector)),
            ),
            ("tab\there", Err(('\t', Control))),
            ("line\nbreak", Err(('\n', Control))),
            ("nul\0", Err(('\0', Control))),
            ("del\u{7F}", Err(('\u{7F}', Control))),
            ("c1\u{85}", Err(('\u{85}', Control))),
            ("a\u{2028}b", Err(('\u{2028}', LineBreak))),
            ("a\u{2029}b", Err(('\u{2029}', LineBreak))),
            ("a\u{202A}b", Err(('\u{202A}', Bidirectional))),
            ("a\u{202B}b", Err(('\u{202B}', Bidirectional))),
            ("a\u{202C}b", Err(('\u{202C}', Bidirectional))),
            ("a\u{202D}b", Err(('\u{202D}', Bidirectional))),
            ("evil\u{202E}gpj.exe", Err(('\u{202E}', Bidirectional))),
            ("a\u{2066}b", Err(('\u{2066}', Bidirectional))),
            ("a\u{2067}b", Err(('\u{2067}', Bidirectional))),
            ("a\u{2068}b", Err(('\u{2068}', Bidirectional))),
            ("a\u{2069}b", Err(('\u{2069}', Bidirectional))),
            ("a\u{200E}b", Err(('\u{200E}', Bidirectional))),
            ("a\u{200F}b", Err(('\u{200F}', Bidirectional))),
            ("a\u{061C}b", Err(('\u{061C}', Bidirectional))),
            ("a\u{200B}b", Err(('\u{200B}', Invisible))),
            ("a\u{200C}b", Err(('\u{200C}', Invisible))),
            ("a\u{200D}b", Err(('\u{200D}', Invisible))),
            ("a\u{2060}b", Err(('\u{2060}', Invisible))),
            ("a\u{2061}b", Err(('\u{2061}', Invisible))),
            ("a\u{2062}b", Err(('\u{2062}', Invisible))),
            ("a\u{2063}b", Err(('\u{2063}', Invisible))),
            ("a\u{2064}b", Err(('\u{2064}', Invisible))),
            ("\u{FEFF}bom", Err(('\u{FEFF}', Invisible))),
            ("soft\u{AD}hyphen", Err(('\u{AD}', Invisible))),
            ("a\u{34F}b", Err(('\u{34F}', Invisible))),
            ("\u{3164}", Err(('\u{3164}', Invisible))),
            ("a\u{180E}b", Err(('\u{180E}', Invisible))),
            ("a\u{FFF9}b", Err(('\u{FFF9}', Invisible))),
            ("tag\u{E0041}", Err(('\u{E0041}', Invisible))),
            // The family emoji is a zero-width-joiner sequence: refused.
            ("\u{1F468}\u{200D}\u{1F469}", Err(('\u{200D}', Invisible))),
            // The first bad character is the one named.
            ("a\u{200B}\u{202E}", Err(('\u{200B}', Invisible))),
        ] {
            check_text(input, expected);
        }
    }

    #[test]
    fn code_points_are_written_as_unicode_writes_them() {
        assert_eq!(CodePoint('\u{202E}').to_string(), "U+202E");
        assert_eq!(CodePoint('\t').to_string(), "U+0009");
        assert_eq!(CodePoint('\u{E0100}').to_string(), "U+E0100");
        let error = normalize_display_text("a\u{202E}").unwrap_err();
        assert_eq!(error.to_string(), "U+202E (a bidirectional control)");
    }

    #[test]
    fn domains() {
        for (input, valid) in [
            ("localhost", true),
            ("a.example", true),
            ("xn--bcher-kva.example", true),
            ("127.0.0.1", true),
            ("", false),
            ("A.example", false),
            ("a..example", false),
            (".example", false),
            ("-a.example", false),
            ("a_b.example", false),
            ("a.example:443", false),
            (&format!("{}.example", "a".repeat(64)), false),
        ] {
            check::<Domain>(input, valid);
        }
    }

    #[test]
    fn user_ids() {
        for (input, valid) in [
            ("alice@a.example", true),
            ("alice@localhost", true),
            ("alice", false),
            ("@a.example", false),
            ("alice@", false),
            ("alice@b@a.example", false),
            ("Alice@a.example", false),
        ] {
            check::<UserId>(input, valid);
        }
    }

    #[test]
    fn device_ids_and_credential_identities() {
        check::<DeviceId>("0123456789abcdef", true);
        check::<DeviceId>("0123456789ABCDEF", false);
        check::<DeviceId>("0123456789abcde", false);
        check::<DeviceId>("0123456789abcdeg", false);
        assert_eq!(
            DeviceId::from_random_bytes([0, 1, 2, 0xab, 0xcd, 0xef, 0x10, 0xff]).as_str(),
            "000102abcdef10ff"
        );
        check::<CredentialIdentity>("alice@a.example/0123456789abcdef", true);
        check::<CredentialIdentity>("alice@a.example", false);
        check::<CredentialIdentity>("alice@a.example/", false);
        check::<CredentialIdentity>("alice/0123456789abcdef", false);
        assert!(CredentialIdentity::from_bytes(&[0xff, 0xfe]).is_err());
    }
}
