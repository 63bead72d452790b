//! A registry on loopback that answers each request with what a test says,
//! for the faults a real registry does not produce on demand.

use std::io::{BufRead, BufReader, Write};

/// Serves up to `requests` requests: `answer` gets the request line and
/// returns the raw reply. Returns the port.
pub fn serve(requests: usize, answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten().take(requests) {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap_or(0) <= 2 {
                    break;
                }
            }
            let mut s = s;
            let _ = s.write_all(&answer(&line));
            // Keeps the connection a moment: a client reading a body that
            // was announced longer must see a stall, not a close.
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    port
}
