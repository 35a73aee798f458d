/* forksim calibration: the tiny static helper that posix_spawn / fork+execve run.
 * Built with -static -nostdlib: no dynamic loader and no libc start-up, so an exec of it measures the
 * kernel's execve (bprm, load_elf_binary, begin_new_exec) and little else. It exits at once. */
#if defined(__x86_64__)
__attribute__((naked, noreturn)) void _start(void)
{
    __asm__ volatile("mov $231, %eax\n\t" /* exit_group */
                     "xor %edi, %edi\n\t"
                     "syscall\n\t"
                     "hlt\n\t");
}
#else
#include <unistd.h>
int main(void) { _exit(0); }
#endif
