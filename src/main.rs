#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: hothot::alloc::Allocator = hothot::alloc::Allocator;

/// Configures the allocator before anything allocates (see
/// `hothot::alloc::configure_at_load`): an `.init_array` entry with a
/// priority runs before the unprioritised constructors, mimalloc's own
/// among them.
#[cfg(feature = "mimalloc")]
#[used]
#[link_section = ".init_array.00099"]
static CONFIGURE_ALLOCATOR: extern "C" fn() = hothot::alloc::configure_at_load;

fn main() {
    std::process::exit(hothot::cli::main());
}
