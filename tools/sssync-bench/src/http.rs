//! A kept-alive HTTP/1.1 client, just enough for the bench: the pages of the SSR row and the
//! snapshots of the refetch baselines.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

type Error = Box<dyn std::error::Error + Send + Sync>;
type Result<T> = std::result::Result<T, Error>;

/// A kept-alive HTTP/1.1 connection that reads whole responses (a length, or chunks): the
/// pages of the SSR row, the snapshots of the refetch baselines.
pub(crate) struct Http {
    stream: BufReader<tokio::net::TcpStream>,
}

impl Http {
    pub(crate) async fn connect(addr: &str) -> Result<Http> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Http {
            stream: BufReader::new(stream),
        })
    }

    /// GETs `path` (at most 30 s): its body; an error unless the status is 200.
    pub(crate) async fn get(&mut self, path: &str) -> Result<Vec<u8>> {
        self.get_with(path, "").await
    }

    /// GETs `path` with more header lines (each ending in CRLF).
    pub(crate) async fn get_with(&mut self, path: &str, headers: &str) -> Result<Vec<u8>> {
        tokio::time::timeout(Duration::from_secs(30), self.get_unbounded(path, headers))
            .await
            .map_err(|_| format!("GET {path} timed out"))?
    }

    async fn get_unbounded(&mut self, path: &str, headers: &str) -> Result<Vec<u8>> {
        let request = format!("GET {path} HTTP/1.1\r\nHost: bench\r\n{headers}\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;
        let mut status = String::new();
        self.stream.read_line(&mut status).await?;
        if !status.contains(" 200 ") {
            return Err(format!("GET {path}: {}", status.trim()).into());
        }
        let (mut length, mut chunked) = (None, false);
        loop {
            let mut line = String::new();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err("the connection closed".into());
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse::<usize>().ok();
                } else if k.eq_ignore_ascii_case("transfer-encoding")
                    && v.to_ascii_lowercase().contains("chunked")
                {
                    chunked = true;
                }
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                self.stream.read_line(&mut size).await?;
                let size = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16)?;
                let mut chunk = vec![0; size + 2]; // and its CRLF
                self.stream.read_exact(&mut chunk).await?;
                if size == 0 {
                    break;
                }
                body.extend_from_slice(&chunk[..size]);
            }
        } else {
            let length = length.ok_or("neither a length nor chunks")?;
            body.resize(length, 0);
            self.stream.read_exact(&mut body).await?;
        }
        Ok(body)
    }
}
