//! The `streamsql` binary; everything lives in [`streamsql::cli`].

fn main() -> std::process::ExitCode {
    streamsql::cli::main()
}
