/* afo — umbrella header. */
#ifndef AFO_H
#define AFO_H
#include "afo/base.h"
#include "afo/array.h"
#include "afo/ops.h"
#include "afo/memory.h"
#include "afo/device.h"
#include "afo/io.h"
#include "afo/autodiff.h"
#include "afo/tokenizer.h"
#include "afo/chat.h"
#include "afo/sample.h"
#include "afo/model.h"
#include "afo/generate.h"
#include "afo/gguf.h"
#include "afo/quant.h"
#endif
