//! `fjord transactions`: what `kafka-transactions list|describe` shows, from the embedded
//! transaction coordinator (which has finished or aborted whatever a crash left open by the
//! time the broker has opened).

use clap::Subcommand;
use fjord_broker::{Admin, TransactionMetadata};

use crate::config::{Settings, with_broker};
use crate::error::Result;
use crate::output::Out;
use crate::row;

/// `fjord transactions ...`
#[derive(Debug, Subcommand)]
pub enum TransactionsCommand {
    /// List transactional ids with their producer id, epoch and state.
    List,
    /// One transactional id in detail, with the partitions of its open transaction.
    Describe {
        /// The transactional id.
        transactional_id: String,
    },
}

/// Runs a `transactions` command.
pub fn run(settings: &Settings, command: TransactionsCommand) -> Result<()> {
    with_broker(settings, |broker| async move {
        let admin = Admin::new(&broker);
        let mut out = Out::stdout();
        match command {
            TransactionsCommand::List => {
                let mut txns = admin.list_transactions();
                txns.sort_by(|a, b| a.transactional_id.cmp(&b.transactional_id));
                let mut rows =
                    vec![row!["TRANSACTIONAL-ID", "PRODUCER-ID", "EPOCH", "STATE", "PARTITIONS"]];
                for t in &txns {
                    rows.push(row![
                        t.transactional_id,
                        t.producer_id,
                        t.producer_epoch,
                        t.state.name(),
                        t.partitions.len()
                    ]);
                }
                out.table(&rows)?;
            }
            TransactionsCommand::Describe { transactional_id } => {
                describe(&admin.describe_transaction(&transactional_id)?, &mut out)?;
            }
        }
        out.flush()
    })
}

fn describe(t: &TransactionMetadata, out: &mut Out) -> Result<()> {
    let partitions: Vec<String> = t.partitions.iter().map(ToString::to_string).collect();
    let start = if t.start_ms < 0 { "-".to_string() } else { t.start_ms.to_string() };
    let rows = vec![
        row!["TransactionalId:", t.transactional_id],
        row!["ProducerId:", t.producer_id],
        row!["ProducerEpoch:", t.producer_epoch],
        row!["State:", t.state.name()],
        row!["TimeoutMs:", t.timeout_ms],
        row!["TransactionStartTimeMs:", start],
        row!["LastUpdateTimeMs:", t.last_update_ms],
        row!["Partitions:", if partitions.is_empty() { "-".into() } else { partitions.join(",") }],
    ];
    out.table(&rows)
}
