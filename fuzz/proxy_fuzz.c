/* proxy_fuzz.c -- libFuzzer target: the PROXY protocol header parser
** (core/sh_proxy). Whatever the input, parsing must not crash, and its
** answers must be what the reader (sh_proxy_start) relies on to take the
** header a piece at a time without reading past it:
**   - a complete header's length is within the input and the limits
**     (version 1: 107 bytes, in all: SH_PROXY_MAX);
**   - every shorter beginning of it says "more" (0), never "bad" or
**     "complete";
**   - the header alone parses to the same length, whatever followed it;
**   - a beginning said to need more stays so, or becomes complete or bad,
**     as bytes are added: once bad, every longer input is bad.
** Built and run by `make fuzz`. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "../core/sh_proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size) {
  sh_proxy_info info;
  char err[64];
  size_t k;
  int n = sh_proxy_parse(data, size, &info, err, sizeof err);
  int bad_at = -1;
  if (n > 0) {
    if ((size_t)n > size || n > SH_PROXY_MAX) abort();
    if (info.version == 1 && n > SH_PROXY_V1_MAX) abort();
    if (info.version != 1 && info.version != 2) abort();
    if (info.has_addr && (info.srclen == 0 || info.dstlen == 0)) abort();
    if (info.tlvlen > 0 && (info.tlv < data || info.tlv + info.tlvlen > data + n)) abort();
    for (k = 0; k < (size_t)n; k++)
      if (sh_proxy_parse(data, k, &info, err, sizeof err) != 0) abort();
    if (sh_proxy_parse(data, (size_t)n, &info, err, sizeof err) != n) abort();
    return 0;
  }
  for (k = 0; k <= size; k++) {        /* once bad, bad for good */
    int r = sh_proxy_parse(data, k, &info, err, sizeof err);
    if (r > 0) abort();                /* a complete header before the end: n > 0 above */
    if (r < 0 && bad_at < 0) bad_at = (int)k;
    if (r == 0 && bad_at >= 0) abort();
  }
  if ((n < 0) != (bad_at >= 0)) abort();
  return 0;
}
