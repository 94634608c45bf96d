//! `rusd snapshot status|restore`.

use std::io::Read;

use anyhow::{bail, Context};
use rusd_mvcc::{Backend, MvccStore, StoreConfig};

use crate::cli::SnapshotCommand;

/// Runs a snapshot subcommand.
pub fn run(cmd: SnapshotCommand) -> anyhow::Result<()> {
    match cmd {
        SnapshotCommand::Status { file } => {
            let dir = tempdir_near(&file)?;
            let db = dir.join("db");
            let input =
                std::fs::File::open(&file).with_context(|| format!("{}", file.display()))?;
            let result = Backend::restore(std::io::BufReader::new(input), &db, 16 << 20)
                .and_then(|()| MvccStore::open(StoreConfig::new(&db)));
            let report = match result {
                Ok(store) => {
                    let line = format!(
                        "hash {:08x}, revision {}, keys {}, size {} bytes",
                        store.hash()?,
                        store.current_revision(),
                        store.key_count(),
                        std::fs::metadata(&file)?.len()
                    );
                    store.close()?;
                    Ok(line)
                }
                Err(e) => Err(e),
            };
            let _ = std::fs::remove_dir_all(&dir);
            println!("{}", report.context("snapshot check failed")?);
            Ok(())
        }
        SnapshotCommand::Restore { file, data_dir } => {
            if data_dir.exists() {
                bail!("data dir {} exists already", data_dir.display());
            }
            let mut input: Box<dyn Read> = Box::new(std::io::BufReader::new(
                std::fs::File::open(&file).with_context(|| format!("{}", file.display()))?,
            ));
            let db = data_dir.join("member").join("snap").join("db");
            std::fs::create_dir_all(db.parent().unwrap_or(&data_dir))?;
            if let Err(e) = Backend::restore(&mut input, &db, 64 << 20) {
                let _ = std::fs::remove_dir_all(&data_dir);
                return Err(e.into());
            }
            println!(
                "restored snapshot {} into {}",
                file.display(),
                data_dir.display()
            );
            Ok(())
        }
    }
}

fn tempdir_near(file: &std::path::Path) -> anyhow::Result<std::path::PathBuf> {
    let base = std::env::temp_dir().join(format!(
        "rusd-snapshot-status-{}-{}",
        std::process::id(),
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base)?;
    Ok(base)
}
