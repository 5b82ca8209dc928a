use std::io::{BufRead, BufReader, Write};

struct Upper;

#[gpe_core::instrument_worker(sync)]
impl Upper {
    fn handle(&self, conn: gpe_core::runtime::Connection) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        reader.get_mut().write_all(line.to_uppercase().as_bytes())
    }
}

fn main() {
    let _run: fn(Upper) -> std::process::ExitCode = Upper::run;
}
