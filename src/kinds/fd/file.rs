//! Regular files and directories, memfds and files deleted while open (their contents
//! travel in the image).
