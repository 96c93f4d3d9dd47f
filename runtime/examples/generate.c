/* Example: greedy text generation through the Loom C API (loom.h).
 *
 *   generate ARTIFACT [PROMPT] [STEPS]
 *
 * Loads the artifact, encodes PROMPT with BOS, feeds it, then picks the most
 * likely next token up to STEPS times (default 64), printing the text as it
 * goes. Stops early at BOS/EOS or when the context is full. LOOM_DEVICE=cuda
 * in the environment runs it on the GPU (docs/cuda.md): each decode step is
 * then one loom_session_forward_sample, a replayed CUDA graph. Written in
 * C89 to show that the header needs nothing newer.
 */
#include "loom/loom.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check(loom_status status, const char *what) {
  if (status != LOOM_OK) {
    fprintf(stderr, "generate: %s: %s (%s)\n", what, loom_last_error(),
            loom_status_name(status));
    return 0;
  }
  return 1;
}

/* Prints the bytes of `token` following `prev`. */
static int print_token(const loom_model *model, int prev, int token) {
  char text[256];
  size_t len;
  if (!check(loom_token_to_text(model, prev, token, text, sizeof text, &len),
             "decode"))
    return 0;
  fwrite(text, 1, len, stdout);
  fflush(stdout);
  return 1;
}

int main(int argc, char **argv) {
  const char *prompt = argc > 2 ? argv[2] : "";
  long steps = argc > 3 ? atol(argv[3]) : 64;
  loom_model *model = NULL;
  loom_session *session = NULL;
  loom_sampler *sampler = NULL;
  loom_model_info info;
  int *ids = NULL;
  size_t n_ids = 0, i;
  const float *logits;
  const char *device = getenv("LOOM_DEVICE");
  int cuda = device && strcmp(device, "cuda") == 0;
  int prev, next, ok = 0;
  long generated;

  if (argc < 2 || argc > 4 || steps < 0) {
    fprintf(stderr, "usage: generate ARTIFACT [PROMPT] [STEPS]\n");
    return 1;
  }
  if (!check(loom_model_load(argv[1], &model), "load") ||
      !check(loom_model_get_info(model, &info), "model info"))
    goto done;

  /* Ask for the id count first, then encode into a buffer of that size. */
  if (loom_tokenize(model, prompt, 1, NULL, 0, &n_ids) !=
      LOOM_ERROR_BUFFER_TOO_SMALL) {
    check(LOOM_ERROR, "tokenize");
    goto done;
  }
  ids = (int *)malloc(n_ids * sizeof *ids);
  if (!ids ||
      !check(loom_tokenize(model, prompt, 1, ids, n_ids, &n_ids), "tokenize"))
    goto done;
  if ((long)n_ids > info.context_length) {
    fprintf(stderr, "generate: the prompt has %lu tokens, the context %ld\n",
            (unsigned long)n_ids, info.context_length);
    goto done;
  }

  if (device && !cuda && strcmp(device, "cpu") != 0) {
    fprintf(stderr, "generate: LOOM_DEVICE must be cpu or cuda, not '%s'\n",
            device);
    goto done;
  }
  if (!check(loom_session_create_on(model,
                                    cuda ? LOOM_DEVICE_CUDA : LOOM_DEVICE_CPU,
                                    0, 0, &session),
             "session") ||
      !check(loom_sampler_create(model, 0.0f, 1.0f, 1, &sampler), "sampler"))
    goto done;

  for (i = 1; i < n_ids; ++i)
    if (!print_token(model, ids[i - 1], ids[i]))
      goto done;
  if (!check(loom_session_forward(session, ids, n_ids, &logits), "forward"))
    goto done;

  prev = ids[n_ids - 1];
  if (steps > 0 && !check(loom_sampler_sample(sampler, logits, &next), "sample"))
    goto done;
  for (generated = 0; generated < steps; ++generated) {
    if (loom_token_ends_generation(model, next))
      break;
    if (!print_token(model, prev, next))
      goto done;
    if (generated + 1 == steps ||
        loom_session_position(session) >= info.context_length)
      break;
    prev = next;
    /* One decode step and the choice of the next token. */
    if (!check(loom_session_forward_sample(session, prev, sampler, &next),
               "decode step"))
      goto done;
  }
  printf("\n");
  ok = 1;

done:
  free(ids);
  loom_sampler_free(sampler);
  loom_session_free(session);
  loom_model_free(model);
  return ok ? 0 : 1;
}
