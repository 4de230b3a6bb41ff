/* Test-only aid for running Windows builds under Wine 8 (.ci/windows).
 *
 * Rust's standard library for Windows takes its random bytes from
 * ProcessPrng in bcryptprimitives.dll, which every Windows since 10 has and
 * Wine 8 lacks, so any Rust .exe fails to start under Wine 8. This DLL,
 * placed beside the .exe, exports ProcessPrng over advapi32's
 * SystemFunction036 (RtlGenRandom), which Wine has. It is never shipped:
 * Windows itself has the real DLL. */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG chunk = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, chunk)) return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
