// efi-vector-math: an opt pass (in the same plugin as efi-split-long-blocks)
// that tells LLVM's loop vectorizer which vector versions of libm functions
// glibc's libmvec provides, so that loops calling them vectorize.
//
// clang 15's -fveclib=libmvec maps only sin, cos, exp, log and pow (and their
// intrinsics); libmvec (glibc >= 2.35 on x86-64) also has tanh, erf, erfc,
// expm1, log1p, atan2, ... in four instruction sets: b (SSE, 2 doubles), c
// (AVX, 4), d (AVX2, 4) and e (AVX-512, 8); floats twice as many. clang's
// `#pragma omp declare simd` attributes do not reach the vectorizer (it reads
// only the "vector-function-abi-variant" call-site attribute). This pass adds
// that attribute to every call of a function in the table below, naming the
// variants of the instruction sets in -efi-vector-isa (the Python side gives
// the host's: the library is built for this machine), and declares the
// variants (kept by llvm.compiler.used until the vectorizer has run, as
// LLVM's own InjectTLIMappings does). It runs after Enzyme, on the derivative
// code; the final clang -O3 step vectorises with -fveclib=libmvec and links
// libmvec. Whether a variant exists in this glibc is checked in Python
// (-efi-vector-functions lists the ones found); nothing else changes.

#include "llvm/IR/Instructions.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/PassManager.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Transforms/Utils/ModuleUtils.h"

#include <string>
#include <vector>

using namespace llvm;

static cl::opt<std::string> VectorIsa("efi-vector-isa", cl::init("b"),
                                      cl::desc("libmvec instruction sets to use (letters of bcde)"));
static cl::list<std::string> VectorFunctions(
    "efi-vector-functions", cl::CommaSeparated,
    cl::desc("libm functions (double versions) whose libmvec variants exist here"));

namespace {

struct VectorMath : PassInfoMixin<VectorMath> {
  static unsigned lanes(char isa, bool is_float) {
    unsigned doubles = isa == 'b' ? 2 : isa == 'e' ? 8 : 4;
    return is_float ? 2 * doubles : doubles;
  }

  PreservedAnalyses run(Module &M, ModuleAnalysisManager &) {
    bool changed = false;
    std::vector<GlobalValue *> keep;
    for (const std::string &name : VectorFunctions) {
      for (bool is_float : {false, true}) {
        Function *F = M.getFunction(is_float ? name + "f" : name);
        if (F == nullptr || !F->isDeclaration() || F->arg_size() == 0 || F->arg_size() > 2)
          continue;
        Type *scalar = is_float ? Type::getFloatTy(M.getContext()) : Type::getDoubleTy(M.getContext());
        bool shape_ok = F->getReturnType() == scalar;
        for (const Argument &a : F->args()) shape_ok &= a.getType() == scalar;
        if (!shape_ok) continue;
        std::vector<std::string> mappings;
        std::string params(F->arg_size(), 'v');
        for (char isa : std::string(VectorIsa)) {
          unsigned vf = lanes(isa, is_float);
          std::string variant = "_ZGV" + std::string(1, isa) + "N" + std::to_string(vf) + params + "_" +
                                F->getName().str();
          auto *vector = FixedVectorType::get(scalar, vf);
          std::vector<Type *> args(F->arg_size(), vector);
          FunctionCallee callee = M.getOrInsertFunction(variant, FunctionType::get(vector, args, false));
          if (auto *declared = dyn_cast<Function>(callee.getCallee())) keep.push_back(declared);
          mappings.push_back("_ZGV_LLVM_N" + std::to_string(vf) + params + "_" + F->getName().str() + "(" +
                             variant + ")");
        }
        if (mappings.empty()) continue;
        for (User *user : F->users())
          if (auto *call = dyn_cast<CallInst>(user))
            if (call->getCalledFunction() == F) {
              VFABI::setVectorVariantNames(call, mappings);
              changed = true;
            }
      }
    }
    if (!keep.empty()) appendToCompilerUsed(M, keep);
    return changed ? PreservedAnalyses::none() : PreservedAnalyses::all();
  }
};

}  // namespace

bool efiRegisterVectorMath(StringRef name, ModulePassManager &MPM) {
  if (name != "efi-vector-math") return false;
  MPM.addPass(VectorMath());
  return true;
}
