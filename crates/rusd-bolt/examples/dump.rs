//! Prints every bucket and entry of a bbolt file: `cargo run -p rusd-bolt --example dump FILE`.

use std::ops::ControlFlow;

fn show(bytes: &[u8]) -> String {
    bytes.escape_ascii().to_string()
}

fn main() -> std::io::Result<()> {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: dump FILE");
        std::process::exit(2);
    };
    let mut r = rusd_bolt::Reader::open(std::fs::File::open(path)?)?;
    println!("{:?}", r.meta());
    let _ = r.walk(&mut |path, key, item| {
        let indent = "  ".repeat(path.len());
        match item {
            rusd_bolt::Item::Value(v) => println!("{indent}{} = {}", show(key), show(v)),
            rusd_bolt::Item::Bucket(b) => println!(
                "{indent}[{}] root {} inline {}",
                show(key),
                b.root,
                b.is_inline()
            ),
        }
        Ok(ControlFlow::Continue(()))
    })?;
    let problems = r.check()?;
    println!("check: {problems:?}");
    Ok(())
}
