//! External resources: descriptors leading outside the tree, given back at restore
//! with --inherit-fd.
