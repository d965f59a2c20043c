/* bench/ucopy.c: what UFFDIO_COPY alone costs, by batch size and wake mode (issue 17,
 * the lazy fill): a 1 GiB area of 4 KiB pages registered for missing pages, filled from
 * a touched 4 MiB buffer. Prints wall and CPU time (and GB/s per CPU). Run by hand:
 *   cc -O2 -o /tmp/ucopy bench/ucopy.c && /tmp/ucopy MIB BATCH_KIB DONTWAKE(0|1) */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
static double now(clockid_t c){struct timespec t;clock_gettime(c,&t);return t.tv_sec+t.tv_nsec*1e-9;}
int main(int argc,char**argv){
	size_t len=(size_t)atol(argv[1])<<20, batch=(size_t)atol(argv[2])<<10; int dw=atoi(argv[3]);
	int u=syscall(SYS_userfaultfd,O_CLOEXEC|O_NONBLOCK);
	struct uffdio_api api={.api=UFFD_API}; if(ioctl(u,UFFDIO_API,&api)){perror("api");return 1;}
	char*a=mmap(0,len,PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
	madvise(a,len,MADV_NOHUGEPAGE);
	struct uffdio_register r={.range={(unsigned long)a,len},.mode=UFFDIO_REGISTER_MODE_MISSING};
	if(ioctl(u,UFFDIO_REGISTER,&r)){perror("reg");return 1;}
	size_t sl=4<<20; char*src=aligned_alloc(4096,sl); memset(src,7,sl);
	double w0=now(CLOCK_MONOTONIC),c0=now(CLOCK_PROCESS_CPUTIME_ID);
	for(size_t o=0;o<len;o+=batch){
		struct uffdio_copy c={.dst=(unsigned long)a+o,.src=(unsigned long)src+(o%sl),.len=batch,.mode=dw?UFFDIO_COPY_MODE_DONTWAKE:0};
		if(ioctl(u,UFFDIO_COPY,&c)){perror("copy");return 1;}
	}
	if(dw){struct uffdio_range w={(unsigned long)a,len}; ioctl(u,UFFDIO_WAKE,&w);}
	double w1=now(CLOCK_MONOTONIC),c1=now(CLOCK_PROCESS_CPUTIME_ID);
	printf("%zu MiB batch %zu KiB dontwake %d: wall %.3f s (%.2f GB/s) cpu %.3f s (%.2f GB/s per CPU)\n",len>>20,batch>>10,dw,w1-w0,len/(w1-w0)/1e9,c1-c0,len/(c1-c0)/1e9);
	return 0;}
