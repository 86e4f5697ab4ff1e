//! `fjord groups`: what `kafka-consumer-groups` does, on the embedded group coordinator.
//!
//! Because the broker is embedded and the data directory is locked while a command runs, a
//! group's members are only ever those of the process that has the directory open; the
//! coordinator still refuses to reset or delete a group that has members, as Kafka does, and
//! says so.

use std::collections::BTreeMap;

use clap::{ArgGroup, Args, Subcommand};
use fjord_broker::{Admin, Broker, OffsetSpec, PartitionLag, TopicPartition};

use crate::config::{Settings, with_broker};
use crate::error::{CliError, Result};
use crate::output::Out;
use crate::row;

/// `fjord groups ...`
#[derive(Debug, Subcommand)]
pub enum GroupsCommand {
    /// List consumer groups with their state.
    List,
    /// A group's state, members, committed offsets and lag.
    Describe {
        /// The group id.
        group: String,
    },
    /// A group's lag per partition and in total.
    Lag {
        /// The group id.
        group: String,
        /// Only these topics (default: the topics the group has committed offsets for).
        #[arg(long = "topic", short)]
        topics: Vec<String>,
    },
    /// Move a group's committed offsets; refused while the group has active members.
    ResetOffsets(ResetArgs),
    /// Delete a group and its committed offsets; refused while it has active members.
    Delete {
        /// The group id.
        group: String,
    },
}

/// `fjord groups reset-offsets`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to_earliest", "to_latest", "to_offset", "to_datetime"])))]
pub struct ResetArgs {
    /// The group id.
    group: String,
    /// Topics to reset (default: the topics the group has committed offsets for); repeatable.
    #[arg(long = "topic", short)]
    topics: Vec<String>,
    /// To the log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// To the log end offset.
    #[arg(long)]
    to_latest: bool,
    /// To this offset (clamped to each partition's range, as Kafka does).
    #[arg(long, value_name = "OFFSET")]
    to_offset: Option<i64>,
    /// To the first record at or after this time: `2024-05-01T12:00:00Z`, with an optional
    /// `.sss` and a `+HH:MM` offset instead of `Z` (no zone means UTC), or epoch milliseconds.
    #[arg(long, value_name = "DATETIME")]
    to_datetime: Option<String>,
    /// Print the new offsets without changing anything.
    #[arg(long)]
    dry_run: bool,
}

/// Runs a `groups` command.
pub fn run(settings: &Settings, command: GroupsCommand) -> Result<()> {
    with_broker(settings, |broker| async move {
        let admin = Admin::new(&broker);
        let mut out = Out::stdout();
        match command {
            GroupsCommand::List => {
                let mut rows = vec![row!["GROUP", "STATE", "PROTOCOL-TYPE"]];
                for g in admin.list_groups() {
                    rows.push(row![g.group_id, g.state.name(), g.protocol_type]);
                }
                out.table(&rows)?;
            }
            GroupsCommand::Describe { group } => describe(&admin, &group, &mut out)?,
            GroupsCommand::Lag { group, topics } => {
                let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
                let lags = admin.group_lag(&group, (!topics.is_empty()).then_some(&topics[..]))?;
                lag_table(&lags, &mut out)?;
                out.line(format_args!("Total lag: {}", lags.iter().map(|l| l.lag).sum::<i64>()))?;
            }
            GroupsCommand::ResetOffsets(args) => reset(&broker, &admin, args, &mut out).await?,
            GroupsCommand::Delete { group } => {
                admin.delete_group(&group).await?;
                out.line(format_args!("Deleted group {group}."))?;
            }
        }
        out.flush()
    })
}

fn describe(admin: &Admin, group: &str, out: &mut Out) -> Result<()> {
    let d = admin.describe_group(group)?;
    out.line(format_args!(
        "Group: {}\tState: {}\tProtocolType: {}\tProtocol: {}\tGeneration: {}\tMembers: {}",
        d.group_id,
        d.state.name(),
        dash(&d.protocol_type),
        dash(&d.protocol),
        d.generation_id,
        d.members.len()
    ))?;
    if !d.members.is_empty() {
        let mut rows = vec![row!["MEMBER-ID", "CLIENT-ID", "LEADER"]];
        for m in &d.members {
            rows.push(row![m.member_id, m.client_id, m.member_id == d.leader]);
        }
        out.table(&rows)?;
    }
    lag_table(&admin.group_lag(group, None)?, out)
}

fn dash(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

fn lag_table(lags: &[PartitionLag], out: &mut Out) -> Result<()> {
    let mut rows = vec![row!["TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"]];
    for l in lags {
        let current = l.committed.map_or_else(|| "-".to_string(), |c| c.to_string());
        rows.push(row![l.partition.topic, l.partition.partition, current, l.log_end_offset, l.lag]);
    }
    out.table(&rows)
}

/// Where `reset-offsets` moves the offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Earliest,
    Latest,
    Offset(i64),
    Timestamp(i64),
}

async fn reset(broker: &Broker, admin: &Admin, args: ResetArgs, out: &mut Out) -> Result<()> {
    let target = if args.to_earliest {
        Target::Earliest
    } else if args.to_latest {
        Target::Latest
    } else if let Some(offset) = args.to_offset {
        Target::Offset(offset)
    } else if let Some(datetime) = &args.to_datetime {
        Target::Timestamp(parse_datetime(datetime)?)
    } else {
        return Err(CliError::arg(
            "reset-offsets",
            "",
            "give --to-earliest, --to-latest, --to-offset or --to-datetime",
        ));
    };
    let mut topics = args.topics.clone();
    if topics.is_empty() {
        topics =
            admin.list_group_offsets(&args.group)?.keys().map(|tp| tp.topic.to_string()).collect();
        topics.dedup();
    }
    if topics.is_empty() {
        return Err(CliError::arg(
            "--topic",
            "",
            format!("group `{}` has no committed offsets: name the topics to reset", args.group),
        ));
    }
    let mut plan = BTreeMap::new();
    for topic in &topics {
        for p in 0..broker.partition_count(topic)? {
            let tp = TopicPartition::new(topic.as_str(), p);
            let offset = new_offset(broker, &tp, target)?;
            plan.insert(tp, offset);
        }
    }
    if !args.dry_run {
        broker.group_coordinator().reset_offsets(&args.group, plan.clone()).await?;
    }
    let mut rows = vec![row!["TOPIC", "PARTITION", "NEW-OFFSET"]];
    for (tp, offset) in &plan {
        rows.push(row![tp.topic, tp.partition, offset]);
    }
    out.table(&rows)?;
    if args.dry_run {
        out.line("Dry run: nothing was changed.")?;
    }
    Ok(())
}

/// The offset a partition resets to: earliest and latest as listed, an explicit offset
/// clamped to the partition's range, a time by the time index (the end when no record is
/// that recent), as `kafka-consumer-groups --reset-offsets`.
fn new_offset(broker: &Broker, tp: &TopicPartition, target: Target) -> Result<i64> {
    let start = broker.list_offset(tp, OffsetSpec::Earliest)?.offset;
    let end = broker.list_offset(tp, OffsetSpec::Latest)?.offset;
    Ok(match target {
        Target::Earliest => start,
        Target::Latest => end,
        Target::Offset(o) => o.clamp(start, end),
        Target::Timestamp(ts) => broker.list_offset(tp, OffsetSpec::Timestamp(ts))?.offset,
    })
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff][Z|+HH:MM|-HH:MM]` (no zone: UTC) or epoch milliseconds
/// into epoch milliseconds.
pub fn parse_datetime(s: &str) -> Result<i64> {
    let bad = || {
        CliError::arg(
            "--to-datetime",
            s,
            "use YYYY-MM-DDTHH:MM:SS[.sss][Z|+HH:MM], e.g. 2024-05-01T12:00:00Z, or epoch milliseconds",
        )
    };
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let (date, time) = s.split_once(['T', ' ']).ok_or_else(bad)?;
    let (time, zone_minutes) = if let Some(t) = time.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(at) = time.rfind(['+', '-']) {
        let (t, zone) = time.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (h, m) = zone[1..].split_once(':').ok_or_else(bad)?;
        let h: i64 = h.parse().map_err(|_| bad())?;
        let m: i64 = m.parse().map_err(|_| bad())?;
        if h > 23 || m > 59 {
            return Err(bad());
        }
        (t, sign * (h * 60 + m))
    } else {
        (time, 0)
    };
    let mut d = date.splitn(3, '-').map(|p| p.parse::<i64>());
    let (Some(Ok(year)), Some(Ok(month)), Some(Ok(day))) = (d.next(), d.next(), d.next()) else {
        return Err(bad());
    };
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut t = hms.splitn(3, ':').map(|p| p.parse::<i64>());
    let (Some(Ok(hour)), Some(Ok(minute)), Some(Ok(second))) = (t.next(), t.next(), t.next())
    else {
        return Err(bad());
    };
    let millis = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let padded = format!("{frac:0<3}");
        padded[..3].parse::<i64>().map_err(|_| bad())?
    };
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return Err(bad());
    }
    let days = days_from_civil(year, month, day);
    let seconds = days * 86_400 + hour * 3600 + minute * 60 + second - zone_minutes * 60;
    Ok(seconds * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_utc_datetimes() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(parse_datetime("2024-05-01T12:00:00Z").unwrap(), 1_714_564_800_000);
        assert_eq!(parse_datetime("2024-05-01T12:00:00.5").unwrap(), 1_714_564_800_500);
        assert_eq!(parse_datetime("2000-02-29T00:00:00.123Z").unwrap(), 951_782_400_123);
    }

    #[test]
    fn applies_zone_offsets() {
        assert_eq!(
            parse_datetime("2024-05-01T14:00:00+02:00").unwrap(),
            parse_datetime("2024-05-01T12:00:00Z").unwrap()
        );
        assert_eq!(
            parse_datetime("2024-05-01T07:30:00-04:30").unwrap(),
            parse_datetime("2024-05-01T12:00:00Z").unwrap()
        );
    }

    #[test]
    fn accepts_epoch_millis_and_rejects_garbage() {
        assert_eq!(parse_datetime("1714564800000").unwrap(), 1_714_564_800_000);
        for bad in ["yesterday", "2024-13-01T00:00:00Z", "2024-05-01", "2024-05-01T25:00:00"] {
            let msg = parse_datetime(bad).unwrap_err().to_string();
            assert!(msg.contains(bad) && msg.contains("YYYY-MM-DD"), "{msg}");
        }
    }
}
