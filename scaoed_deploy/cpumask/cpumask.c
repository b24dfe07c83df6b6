/* Preloaded into a process (LD_PRELOAD), this makes every CPUID instruction of that process report a lesser CPU
 * of this one, as SCAOED_DEPLOY_AS_CPU names it:
 *   avx2         no AVX-512 of any kind, no AVX-VNNI, no AMX: an AVX2-only x86-64 CPU (many laptops and clouds);
 *   avx512       AVX-512 F/CD/BW/DQ/VL only: no VNNI, BF16, FP16 or AMX (a Skylake-SP Xeon);
 *   avx512-vnni  AMX hidden: AVX-512 with VNNI (and BF16, FP16 where this CPU has them), as a Zen 4 EPYC.
 * Any other value (or none) masks as avx2. Linux's CPUID faulting (arch_prctl ARCH_SET_CPUID; the CPU flag
 * "cpuid_fault") turns each CPUID into a SIGSEGV; the handler runs the real CPUID, clears those feature bits and
 * resumes after the instruction. The kernel clears CPUID faulting at exec, and the preload runs again in each new
 * program. A program that installs its own SIGSEGV handler (GCC's cc1plus, Python's faulthandler) keeps it:
 * sigaction and signal are interposed for SIGSEGV, so the mask's handler stays first and passes every real fault
 * on to it. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

static struct sigaction previous; /* the program's own SIGSEGV disposition, which real faults go to */
static int installed;
typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static int real_sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    static sigaction_fn next;
    if (!next)
        next = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return next(sig, act, old);
}

static long set_cpuid(int enabled) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, enabled); }

enum level { AVX2, AVX512, AVX512_VNNI };
static enum level level = AVX2;

static void mask(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c, unsigned *d) {
    /* AMX: leaf 7 EDX AMX-BF16 22, AMX-TILE 24, AMX-INT8 25; leaf 7.1 EAX AMX-FP16 21. Hidden at every level. */
    if (leaf == 7 && sub == 0) {
        *d &= ~((1u << 22) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        *a &= ~(1u << 21);
    }
    if (level == AVX512_VNNI)
        return;
    if (leaf == 7 && sub == 0) {
        /* EBX: IFMA 21; ECX: VBMI 1, VBMI2 6, VNNI 11, BITALG 12, VPOPCNTDQ 14 */
        *b &= ~(1u << 21);
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* EDX: 4VNNIW 2, 4FMAPS 3, VP2INTERSECT 8, AVX512-FP16 23 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 23));
    } else if (leaf == 7 && sub == 1) {
        /* EAX: AVX-VNNI 4, AVX512-BF16 5; EDX: AVX-VNNI-INT8 4, AVX10 19 */
        *a &= ~((1u << 4) | (1u << 5));
        *d &= ~((1u << 4) | (1u << 19));
    }
    if (level == AVX512)
        return;
    if (leaf == 7 && sub == 0) {
        /* EBX: AVX512F 16, DQ 17, PF 26, ER 27, CD 28, BW 30, VL 31 */
        *b &= ~((1u << 16) | (1u << 17) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
    }
}

static void on_segv(int sig, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *r = uc->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) {
        unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
        set_cpuid(1);
        __cpuid_count(leaf, sub, a, b, c, d);
        set_cpuid(0);
        mask(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a, r[REG_RBX] = b, r[REG_RCX] = c, r[REG_RDX] = d;
        r[REG_RIP] += 2;
        return;
    }
    /* a real fault: whatever handled SIGSEGV before (or the default: the process dies as it would have) */
    if (previous.sa_flags & SA_SIGINFO && previous.sa_sigaction) {
        previous.sa_sigaction(sig, info, context);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN && previous.sa_handler) {
        previous.sa_handler(sig);
        return;
    }
    /* the default: fault again with it and end the process as the fault would have */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    real_sigaction(SIGSEGV, &dfl, NULL);
    installed = 0;
}

/* The program sees and sets its own SIGSEGV disposition; the mask's handler stays installed in front of it. */
int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV || !installed)
        return real_sigaction(sig, act, old);
    if (old)
        *old = previous;
    if (act)
        previous = *act;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    sigemptyset(&act.sa_mask);
    if (sigaction(sig, &act, &old) != 0)
        return SIG_ERR;
    return (old.sa_flags & SA_SIGINFO) ? (sighandler_t)old.sa_sigaction : old.sa_handler;
}

__attribute__((constructor)) static void start(void) {
    const char *as = getenv("SCAOED_DEPLOY_AS_CPU");
    if (as && !strcmp(as, "avx512"))
        level = AVX512;
    else if (as && !strcmp(as, "avx512-vnni"))
        level = AVX512_VNNI;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    real_sigaction(SIGSEGV, &sa, &previous);
    installed = 1;
    if (set_cpuid(0) != 0) {
        fprintf(stderr, "error: this CPU or kernel has no CPUID faulting: the CPU mask cannot work here\n");
        _exit(70);
    }
}
