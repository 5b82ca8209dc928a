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

fn main() {
    let _a: fn(Queue) -> std::process::ExitCode = Queue::run;
    let _b: fn(Hello) -> std::process::ExitCode = Hello::run;
}
