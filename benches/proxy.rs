//! Placeholder: the proxy benchmark is being written (see docs/PERFORMANCE.md).
fn main() {
    eprintln!("the proxy benchmark is not written yet");
}
