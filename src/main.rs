#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: hothot::alloc::Allocator = hothot::alloc::Allocator;

fn main() {
    std::process::exit(hothot::cli::main());
}
