//! Topic names: the rules Kafka's `org.apache.kafka.common.internals.Topic` enforces.
//!
//! A topic name becomes a directory name (`<topic>-<partition>`) and part of metric names, so
//! Kafka restricts it to `[a-zA-Z0-9._-]`, at most 249 characters, and neither `.` nor `..`.
//! Because metric names replace `.` with `_`, two topics whose names differ only there
//! (`my.topic` and `my_topic`) collide; Kafka refuses to create the second one.

/// The longest topic name Kafka accepts: 249 characters, so that a partition directory name
/// (`<topic>-<partition>`, and the suffixes Kafka adds to it) fits a 255-byte file name.
pub const MAX_TOPIC_NAME_LENGTH: usize = 249;

/// The internal topic holding consumer group offsets and group metadata.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// The internal topic holding transaction coordinator state.
pub const TRANSACTION_STATE_TOPIC: &str = "__transaction_state";

/// The internal topic holding share-group state (KIP-932); internal in Kafka 4.x.
pub const SHARE_GROUP_STATE_TOPIC: &str = "__share_group_state";

/// Why a topic name is not a legal Kafka topic name (Kafka's `InvalidTopicException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidTopicName {
    /// The name is the empty string.
    #[error("topic name is empty: a topic name needs at least one character")]
    Empty,
    /// The name is `.` or `..`, which would name the log directory's parent or itself.
    #[error("topic name `{0}` is not allowed: `.` and `..` are reserved")]
    Reserved(String),
    /// The name is longer than [`MAX_TOPIC_NAME_LENGTH`].
    #[error(
        "topic name `{}` is {length} characters long: at most {MAX_TOPIC_NAME_LENGTH} are allowed",
        .name.escape_debug()
    )]
    TooLong {
        /// The rejected name.
        name: String,
        /// Its length, counted as Kafka does (UTF-16 code units).
        length: usize,
    },
    /// The name contains a character outside `[a-zA-Z0-9._-]`.
    #[error(
        "topic name `{}` contains `{}`: only ASCII letters, digits, `.`, `_` and `-` are allowed",
        .name.escape_debug(),
        .character.escape_debug()
    )]
    IllegalCharacter {
        /// The rejected name.
        name: String,
        /// The first character that is not allowed.
        character: char,
    },
}

/// Checks `name` against Kafka's topic name rules, in Kafka's order: not empty, not `.` or
/// `..`, at most [`MAX_TOPIC_NAME_LENGTH`] characters, only `[a-zA-Z0-9._-]`.
pub fn validate_topic_name(name: &str) -> Result<(), InvalidTopicName> {
    if name.is_empty() {
        return Err(InvalidTopicName::Empty);
    }
    if name == "." || name == ".." {
        return Err(InvalidTopicName::Reserved(name.to_string()));
    }
    // Java's String.length() counts UTF-16 code units; for a legal (ASCII) name that is the
    // byte count, and counting the same way keeps the error Kafka would give for other names.
    let length = name.encode_utf16().count();
    if length > MAX_TOPIC_NAME_LENGTH {
        return Err(InvalidTopicName::TooLong { name: name.to_string(), length });
    }
    if let Some(character) = name.chars().find(|&c| !is_legal_char(c)) {
        return Err(InvalidTopicName::IllegalCharacter { name: name.to_string(), character });
    }
    Ok(())
}

/// A character Kafka allows in a topic name (`Topic.LEGAL_CHARS`, `[a-zA-Z0-9._-]`).
fn is_legal_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-'
}

/// Whether the name contains `.` or `_`, the characters that make metric names of different
/// topics collide (Kafka's `Topic.hasCollisionChars`; Kafka warns when creating such a topic).
pub fn has_collision_chars(name: &str) -> bool {
    name.contains(['.', '_'])
}

/// Whether two topic names are the same once `.` is replaced with `_` (Kafka's
/// `Topic.hasCollision`). A topic must not be created if it collides with an existing one.
///
/// Identical names collide too; callers checking a new topic against existing ones handle the
/// "already exists" case first.
pub fn topic_names_collide(a: &str, b: &str) -> bool {
    let unify = |byte: u8| if byte == b'.' { b'_' } else { byte };
    a.len() == b.len() && a.bytes().zip(b.bytes()).all(|(x, y)| unify(x) == unify(y))
}

/// Whether the topic is one of Kafka's internal topics ([`CONSUMER_OFFSETS_TOPIC`],
/// [`TRANSACTION_STATE_TOPIC`], [`SHARE_GROUP_STATE_TOPIC`]), which clients may not produce to
/// or delete and which metadata responses flag as internal.
pub fn is_internal(name: &str) -> bool {
    matches!(name, CONSUMER_OFFSETS_TOPIC | TRANSACTION_STATE_TOPIC | SHARE_GROUP_STATE_TOPIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_legal_names() {
        let longest = "a".repeat(MAX_TOPIC_NAME_LENGTH);
        for name in [
            "a",
            "orders",
            "Orders-2024_v1.0",
            "...",
            "-",
            "_",
            "__consumer_offsets",
            "0123456789",
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-",
            longest.as_str(),
        ] {
            assert_eq!(validate_topic_name(name), Ok(()), "{name:?}");
        }
    }

    #[test]
    fn rejects_empty() {
        assert_eq!(validate_topic_name(""), Err(InvalidTopicName::Empty));
    }

    #[test]
    fn rejects_dot_and_dot_dot() {
        for name in [".", ".."] {
            let err = validate_topic_name(name).unwrap_err();
            assert_eq!(err, InvalidTopicName::Reserved(name.to_string()));
            assert!(err.to_string().contains("reserved"), "{err}");
        }
    }

    #[test]
    fn rejects_names_longer_than_249() {
        let name = "a".repeat(MAX_TOPIC_NAME_LENGTH + 1);
        let err = validate_topic_name(&name).unwrap_err();
        assert_eq!(err, InvalidTopicName::TooLong { name: name.clone(), length: 250 });
        assert!(err.to_string().contains("250 characters long: at most 249"), "{err}");
    }

    #[test]
    fn length_is_checked_before_characters_as_kafka_does() {
        // 250 UTF-16 units of illegal characters: Kafka reports the length first.
        let name = "é".repeat(250);
        assert!(matches!(
            validate_topic_name(&name),
            Err(InvalidTopicName::TooLong { length: 250, .. })
        ));
        // 200 'é' are 400 bytes but 200 characters: not too long, but illegal.
        let name = "é".repeat(200);
        assert!(matches!(
            validate_topic_name(&name),
            Err(InvalidTopicName::IllegalCharacter { character: 'é', .. })
        ));
    }

    #[test]
    fn rejects_illegal_characters() {
        for (name, bad) in [
            ("a b", ' '),
            ("a/b", '/'),
            ("a:b", ':'),
            ("a*", '*'),
            ("topic\n", '\n'),
            ("naïve", 'ï'),
            ("a+b", '+'),
            ("a,b", ','),
        ] {
            assert_eq!(
                validate_topic_name(name),
                Err(InvalidTopicName::IllegalCharacter { name: name.to_string(), character: bad }),
                "{name:?}"
            );
        }
    }

    #[test]
    fn illegal_character_message_names_the_topic_and_what_is_allowed() {
        let err = validate_topic_name("a b").unwrap_err();
        assert_eq!(
            err.to_string(),
            "topic name `a b` contains ` `: only ASCII letters, digits, `.`, `_` and `-` are \
             allowed"
        );
        // Control characters are shown escaped.
        let err = validate_topic_name("a\tb").unwrap_err();
        assert!(err.to_string().starts_with("topic name `a\\tb` contains `\\t`"), "{err}");
    }

    #[test]
    fn collision_chars() {
        assert!(has_collision_chars("my.topic"));
        assert!(has_collision_chars("my_topic"));
        assert!(has_collision_chars("__consumer_offsets"));
        assert!(!has_collision_chars("my-topic"));
        assert!(!has_collision_chars("mytopic"));
    }

    #[test]
    fn collisions() {
        assert!(topic_names_collide("my.topic", "my_topic"));
        assert!(topic_names_collide("my_topic", "my.topic"));
        assert!(topic_names_collide("a.b_c", "a_b.c"));
        assert!(topic_names_collide("same", "same"));
        assert!(!topic_names_collide("my.topic", "my-topic"));
        assert!(!topic_names_collide("my.topic", "my.topic2"));
        assert!(!topic_names_collide("my.topic", "My_topic"));
        assert!(!topic_names_collide("a", ""));
    }

    #[test]
    fn internal_topics() {
        assert!(is_internal(CONSUMER_OFFSETS_TOPIC));
        assert!(is_internal("__consumer_offsets"));
        assert!(is_internal(TRANSACTION_STATE_TOPIC));
        assert!(is_internal("__transaction_state"));
        assert!(is_internal(SHARE_GROUP_STATE_TOPIC));
        assert!(!is_internal("__cluster_metadata"));
        assert!(!is_internal("consumer_offsets"));
        assert!(!is_internal("orders"));
        assert!(!is_internal(""));
    }
}
