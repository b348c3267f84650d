fn main() {
    std::process::exit(hothot::cli::main());
}
