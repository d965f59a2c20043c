//! Memory: the areas of a process (what each mapping is, how it is checked and mapped
//! again) and the pages in them.

pub(crate) mod pages;
pub(crate) mod shmem;
