//! Process attributes: resource limits, prctl state, personality, the mm fields
//! (PR_SET_MM_MAP), working directory and root.
