// An LLVM 15 pass plugin for opt with two passes, run around Enzyme:
// `efi-split-long-blocks` before it and `efi-inline-pieces` after it.
//
// Enzyme v0.0.289's activity analysis walks the users of every value down to
// the function's end, so one long basic block costs time quadratic in its
// length (1,000 generated statements: 17 s; 10,000: 26 min, nearly all of it
// in ActivityAnalyzer::isValueInactiveFromUsers). efi-split-long-blocks cuts
// every basic block longer than a threshold into pieces of a fixed number of
// instructions and outlines each piece into an internal noinline function
// (LLVM's CodeExtractor), so Enzyme analyses many short functions and the
// total cost grows linearly. (The caller keeps one small block per piece:
// CodeExtractor gives each call its own block.)
//
// efi-inline-pieces then lets O3 inline the pieces (and the derivatives
// Enzyme made of them) back, except those of blocks longer than
// efi-split-noinline-threshold: one huge function again would make the
// back end's register allocation superlinear (10,000 statements: the final
// clang step took 30 s with everything inlined, 14 s without).
//
// Inside loops a piece's call also costs Enzyme a tape allocation per
// iteration (measured: a 400-statement loop body ran 1.5x slower), so blocks
// in loops are only cut from a higher threshold, where the quadratic compile
// time would dominate.
//
// Functions where outlining would change meaning or that Enzyme's own entry
// points live in are left whole: anything calling __enzyme_*, setjmp-like
// (returns_twice) calls, stacksave/stackrestore, frame and return-address
// intrinsics, allocas outside the entry block, and optnone functions.
// Lifetime markers of a function being cut are dropped first: CodeExtractor
// hoists a piece's lifetime.start of an outside alloca to before its call,
// which would end the object's life under a later read of it (found in
// review: a fully unrolled loop with a local array came out NaN).
//
// No address leaves a piece through memory. CodeExtractor hands every value
// a piece defines and later code uses back through an out-parameter (a stack
// slot of the caller, reloaded after the call). For a pointer that slot is a
// pointer stored in memory, and Enzyme v0.0.289 gives an inactive pointer
// stored where a shadow is kept its own primal address as shadow: a pointer
// into a Const struct argument computed in one piece and dereferenced in a
// later one then had the struct's primal values read as tangents (forward
// mode: every jvp off by the same constant) and derivatives accumulated into
// the Const struct (reverse mode, hvp). So, before a piece is outlined, its
// address-carrying results used outside it (pointers, pointer vectors and
// aggregates, integers made from pointers or turned into pointers) are
// recomputed at each outside use from values defined before the piece: GEPs,
// casts, selects and the like are cloned there, and the piece no longer
// returns them. A piece where that is not possible (say, a pointer loaded
// from memory inside it and used after it) is left in its function.

#include "llvm/Analysis/LoopInfo.h"
#include "llvm/IR/Dominators.h"
#include "llvm/IR/Function.h"
#include "llvm/IR/Instructions.h"
#include "llvm/IR/IntrinsicInst.h"
#include "llvm/IR/Module.h"
#include "llvm/IR/PassManager.h"
#include "llvm/Passes/PassBuilder.h"
#include "llvm/Passes/PassPlugin.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Transforms/Utils/BasicBlockUtils.h"
#include "llvm/Transforms/Utils/CodeExtractor.h"
#include "llvm/Transforms/Utils/Local.h"

#include <map>
#include <string>
#include <vector>

using namespace llvm;

static cl::opt<unsigned> SplitThreshold(
    "efi-split-threshold", cl::init(256),
    cl::desc("cut basic blocks outside loops that hold more instructions than this"));
static cl::opt<unsigned> SplitLoopThreshold(
    "efi-split-loop-threshold", cl::init(1000),
    cl::desc("cut basic blocks inside loops that hold more instructions than this"));
static cl::opt<unsigned> SplitChunk("efi-split-chunk", cl::init(32),
                                    cl::desc("instructions per outlined piece"));
static cl::opt<unsigned> NoInlineThreshold(
    "efi-split-noinline-threshold", cl::init(2000),
    cl::desc("pieces of blocks longer than this stay separate functions after differentiation"));

namespace {

// Marks pieces that efi-inline-pieces may let O3 inline again after Enzyme.
// Enzyme copies function attributes to the derivatives it makes of a piece.
constexpr const char *kInlineLater = "efi-inline-later";

bool mustStayWhole(Function &F) {
  if (F.isDeclaration() || F.hasFnAttribute(Attribute::OptimizeNone) ||
      F.hasFnAttribute(Attribute::Naked))
    return true;
  BasicBlock &entry = F.getEntryBlock();
  for (BasicBlock &BB : F)
    for (Instruction &I : BB) {
      if (isa<AllocaInst>(I) && &BB != &entry) return true;
      auto *call = dyn_cast<CallBase>(&I);
      if (!call) continue;
      if (call->hasFnAttr(Attribute::ReturnsTwice)) return true;
      if (auto *intrinsic = dyn_cast<IntrinsicInst>(call)) {
        Intrinsic::ID id = intrinsic->getIntrinsicID();
        if (id == Intrinsic::stacksave || id == Intrinsic::stackrestore ||
            id == Intrinsic::vastart || id == Intrinsic::vaend || id == Intrinsic::vacopy ||
            id == Intrinsic::returnaddress || id == Intrinsic::addressofreturnaddress ||
            id == Intrinsic::frameaddress || id == Intrinsic::sponentry)
          return true;
      }
      if (Function *callee = call->getCalledFunction()) {
        if (callee->hasFnAttribute(Attribute::ReturnsTwice) ||
            callee->getName().startswith("__enzyme_"))
          return true;
      }
    }
  return false;
}

// Drops every lifetime marker of F: each stack object then lives for the
// whole call, which is always sound (it only stops stack slots from being
// shared). Dropping only the markers of the blocks being cut would not be:
// a marker left elsewhere would declare the object dead there.
void dropLifetimeMarkers(Function &F) {
  std::vector<Instruction *> markers;
  for (BasicBlock &BB : F)
    for (Instruction &I : BB)
      if (auto *intrinsic = dyn_cast<IntrinsicInst>(&I))
        if (intrinsic->getIntrinsicID() == Intrinsic::lifetime_start ||
            intrinsic->getIntrinsicID() == Intrinsic::lifetime_end)
          markers.push_back(intrinsic);
  for (Instruction *marker : markers) marker->eraseFromParent();
}

// Cuts BB into pieces of SplitChunk instructions; returns the pieces that can
// be outlined (all but the head, which keeps PHIs and entry allocas, and the
// tail, which keeps the original terminator).
std::vector<BasicBlock *> cutBlock(BasicBlock *BB) {
  std::vector<Instruction *> cuts;
  unsigned counted = 0;
  for (auto it = BB->getFirstInsertionPt(); it != BB->end(); ++it) {
    Instruction &I = *it;
    if (isa<AllocaInst>(I) || isa<DbgInfoIntrinsic>(I)) continue;
    if (++counted % SplitChunk == 0 && !I.isTerminator()) cuts.push_back(&I);
  }
  std::vector<BasicBlock *> pieces;
  BasicBlock *current = BB;
  for (Instruction *cut : cuts) {
    current = SplitBlock(current, cut);
    pieces.push_back(current);
  }
  if (!pieces.empty()) pieces.pop_back();
  return pieces;
}

// Whether values of type T can hold an address.
bool holdsPointer(Type *T) {
  if (T->isPtrOrPtrVectorTy()) return true;
  if (auto *structType = dyn_cast<StructType>(T)) {
    for (Type *element : structType->elements())
      if (holdsPointer(element)) return true;
    return false;
  }
  if (auto *arrayType = dyn_cast<ArrayType>(T)) return holdsPointer(arrayType->getElementType());
  return false;
}

// Side-effect-free instructions that compute the same value wherever their
// operands are available (not freeze: two copies of a freeze of poison may
// differ); a piece's address-carrying results of these kinds are recomputed
// after the piece instead of being returned through memory.
bool recomputable(const Instruction &I) {
  return isa<GetElementPtrInst>(I) || isa<CastInst>(I) || isa<SelectInst>(I) ||
         isa<ExtractElementInst>(I) || isa<InsertElementInst>(I) ||
         isa<ShuffleVectorInst>(I) || isa<ExtractValueInst>(I) || isa<InsertValueInst>(I) ||
         isa<BinaryOperator>(I);
}

// Handing values out of one piece to later code: which results of `piece`
// must not go through an out-parameter, and how to recompute them.
class PieceResults {
 public:
  explicit PieceResults(BasicBlock *piece) : piece_(piece) {}

  // An instruction of the piece whose value carries an address: Enzyme could
  // give its copy in an out-parameter's stack slot a wrong shadow.
  bool carriesAddress(Instruction *I) {
    auto known = carries_.find(I);
    if (known != carries_.end()) return known->second;
    carries_[I] = false;  // (no cycles in one block; guards the recursion)
    bool result = holdsPointer(I->getType());
    for (User *user : I->users())
      if (isa<IntToPtrInst>(user)) result = true;
    // integers computed from an address inside the piece
    if (!result && I->getType()->isIntOrIntVectorTy()) {
      if (isa<PtrToIntInst>(I)) result = true;
      else if (recomputable(*I))
        for (Value *operand : I->operands())
          if (Instruction *def = inside(operand))
            if (def->getType()->isIntOrIntVectorTy() && carriesAddress(def)) result = true;
    }
    carries_[I] = result;
    return result;
  }

  // Whether I (an address-carrying result) and the address-carrying values
  // of the piece it is computed from can all be recomputed outside it.
  bool canRecompute(Instruction *I) {
    auto known = recomputable_.find(I);
    if (known != recomputable_.end()) return known->second;
    recomputable_[I] = false;
    bool result = recomputable(*I);
    for (Value *operand : I->operands())
      if (Instruction *def = inside(operand))
        if (result && carriesAddress(def) && !canRecompute(def)) result = false;
    recomputable_[I] = result;
    return result;
  }

  // A copy of I placed before `at`, built from copies of the
  // address-carrying values of the piece it uses.
  Instruction *recompute(Instruction *I, Instruction *at) {
    Instruction *copy = I->clone();
    copy->setName(I->getName() + ".efi");
    copy->insertBefore(at);
    for (Use &operand : copy->operands())
      if (Instruction *def = inside(operand.get()))
        if (carriesAddress(def)) operand.set(recompute(def, copy));
    return copy;
  }

  Instruction *inside(Value *V) const {
    auto *I = dyn_cast<Instruction>(V);
    return I && I->getParent() == piece_ ? I : nullptr;
  }

 private:
  BasicBlock *piece_;
  std::map<Instruction *, bool> carries_, recomputable_;
};

// Makes sure no address-carrying value of `piece` is used after it (see the
// file comment): recomputes each one at each of its outside uses. Returns
// false, changing nothing, when some cannot be recomputed; the piece must
// then stay in its function.
bool keepAddressesOutOfResults(BasicBlock *piece) {
  PieceResults results(piece);
  std::vector<Instruction *> escaping;
  for (Instruction &I : *piece) {
    bool usedOutside = false;
    for (User *user : I.users())
      if (cast<Instruction>(user)->getParent() != piece) usedOutside = true;
    if (usedOutside && results.carriesAddress(&I)) escaping.push_back(&I);
  }
  for (Instruction *I : escaping)
    if (!results.canRecompute(I)) return false;
  for (Instruction *I : escaping) {
    std::vector<Use *> outsideUses;
    for (Use &use : I->uses())
      if (cast<Instruction>(use.getUser())->getParent() != piece) outsideUses.push_back(&use);
    for (Use *use : outsideUses) {
      auto *user = cast<Instruction>(use->getUser());
      // a PHI uses its value at the end of the incoming block (never the
      // piece itself: a piece's only successor is the next part of its block)
      Instruction *at = user;
      if (auto *phi = dyn_cast<PHINode>(user)) at = phi->getIncomingBlock(*use)->getTerminator();
      use->set(results.recompute(I, at));
    }
  }
  // the originals (and what only they used) are dead now, unless the piece
  // itself still uses them
  SmallVector<WeakTrackingVH, 8> originals(escaping.begin(), escaping.end());
  RecursivelyDeleteTriviallyDeadInstructionsPermissive(originals);
  return true;
}

struct SplitLongBlocks : PassInfoMixin<SplitLongBlocks> {
  PreservedAnalyses run(Module &M, ModuleAnalysisManager &) {
    std::vector<Function *> functions;
    for (Function &F : M)
      if (!mustStayWhole(F)) functions.push_back(&F);
    bool changed = false;
    for (Function *F : functions)
      if (splitLongBlocks(*F)) changed = true;
    return changed ? PreservedAnalyses::none() : PreservedAnalyses::all();
  }

  // Cuts every long block of F and outlines the pieces. Returns whether F
  // changed (any long block changes it: markers dropped, blocks split).
  static bool splitLongBlocks(Function &F) {
    std::vector<BasicBlock *> longBlocks;
    {
      DominatorTree DT(F);
      LoopInfo LI(DT);
      for (BasicBlock &BB : F) {
        unsigned limit = LI.getLoopFor(&BB) ? SplitLoopThreshold : SplitThreshold;
        if (BB.sizeWithoutDebug() > limit) longBlocks.push_back(&BB);
      }
    }
    if (longBlocks.empty() || SplitChunk < 2) return false;
    dropLifetimeMarkers(F);
    std::vector<std::pair<BasicBlock *, bool>> pieces;  // (piece, keep out of line)
    for (BasicBlock *BB : longBlocks) {
      bool outOfLine = BB->sizeWithoutDebug() > NoInlineThreshold;
      for (BasicBlock *piece : cutBlock(BB)) pieces.emplace_back(piece, outOfLine);
    }
    for (const auto &entry : pieces) {
      if (!keepAddressesOutOfResults(entry.first)) continue;
      CodeExtractorAnalysisCache cache(F);
      CodeExtractor extractor({entry.first}, /*DT=*/nullptr, /*AggregateArgs=*/false,
                              /*BFI=*/nullptr, /*BPI=*/nullptr, /*AC=*/nullptr,
                              /*AllowVarArgs=*/false, /*AllowAlloca=*/false,
                              /*AllocationBlock=*/nullptr, "efi_piece");
      if (!extractor.isEligible()) continue;
      Function *outlined = extractor.extractCodeRegion(cache);
      if (!outlined) continue;
      // A piece inherits its parent's attributes. alwaysinline would clash
      // with noinline (the verifier rejects the pair), and Enzyme's own
      // marks (enzyme_math, enzyme_allocator, ...) describe the parent only.
      outlined->removeFnAttr(Attribute::AlwaysInline);
      std::vector<std::string> enzymeMarks;
      for (const Attribute &attribute : outlined->getAttributes().getFnAttrs())
        if (attribute.isStringAttribute() && attribute.getKindAsString().startswith("enzyme"))
          enzymeMarks.push_back(attribute.getKindAsString().str());
      for (const std::string &mark : enzymeMarks) outlined->removeFnAttr(mark);
      // O2 runs after this pass and before Enzyme: without noinline it would
      // put the pieces straight back.
      outlined->addFnAttr(Attribute::NoInline);
      if (!entry.second) outlined->addFnAttr(kInlineLater);
    }
    return true;
  }
};

struct InlinePieces : PassInfoMixin<InlinePieces> {
  PreservedAnalyses run(Module &M, ModuleAnalysisManager &) {
    bool changed = false;
    for (Function &F : M)
      if (F.hasFnAttribute(kInlineLater)) {
        F.removeFnAttr(Attribute::NoInline);
        F.removeFnAttr(kInlineLater);
        changed = true;
      }
    return changed ? PreservedAnalyses::none() : PreservedAnalyses::all();
  }
};

}  // namespace

bool efiRegisterVectorMath(StringRef name, ModulePassManager &MPM);  // native/vector_math.cpp

extern "C" LLVM_ATTRIBUTE_WEAK PassPluginLibraryInfo llvmGetPassPluginInfo() {
  return {LLVM_PLUGIN_API_VERSION, "enzyme-ffi-split-long-blocks", "2",
          [](PassBuilder &PB) {
            PB.registerPipelineParsingCallback(
                [](StringRef name, ModulePassManager &MPM,
                   ArrayRef<PassBuilder::PipelineElement>) {
                  if (name == "efi-split-long-blocks") {
                    MPM.addPass(SplitLongBlocks());
                    return true;
                  }
                  if (name == "efi-inline-pieces") {
                    MPM.addPass(InlinePieces());
                    return true;
                  }
                  return efiRegisterVectorMath(name, MPM);
                });
          }};
}
