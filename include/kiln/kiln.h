/* kiln/kiln.h - umbrella header: include this one. */
#ifndef KILN_H
#define KILN_H
#include "kiln/core.h"
#include "kiln/autograd.h"
#include "kiln/ops.h"
#include "kiln/nn.h"
#include "kiln/optim.h"
#include "kiln/data.h"
#include "kiln/graph.h"
#include "kiln/io.h"
#include "kiln/onnx.h"
#endif
