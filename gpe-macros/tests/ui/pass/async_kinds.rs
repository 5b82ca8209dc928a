use tokio::io::AsyncWriteExt;

struct Queue;

#[gpe_core::instrument_worker(async, source = next_job, handler = process)]
impl Queue {
    async fn next_job(&self) -> Option<String> {
        None
    }

    async fn process(&self, job: String) -> Result<(), std::io::Error> {
        let _ = job;
        Ok(())
    }
}

struct Hello;

#[gpe_core::instrument_worker(async)]
impl Hello {
    async fn handle(&self, mut conn: tokio::net::TcpStream) -> std::io::Result<()> {
        conn.write_all(b"hello\n").await
    }
}

struct Both;

#[gpe_core::instrument_worker(async)]
impl Both {
    async fn handle(&self, mut conn: gpe_core::runtime::AsyncConnection) -> std::io::Result<()> {
        conn.write_all(b"hello\n").await
    }
}

struct UnixOnly;

#[gpe_core::instrument_worker(async)]
impl UnixOnly {
    async fn handle(&self, mut conn: tokio::net::UnixStream) {
        let _ = conn.write_all(b"hello\n").await;
    }
}

fn main() {
    let _c: fn(Both) -> std::process::ExitCode = Both::run;
    let _d: fn(UnixOnly) -> std::process::ExitCode = UnixOnly::run;
    let _a: fn(Queue) -> std::process::ExitCode = Queue::run;
    let _b: fn(Hello) -> std::process::ExitCode = Hello::run;
}
