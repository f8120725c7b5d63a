package main
import ("context";"os";"github.com/tetratelabs/wazero";"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1")
func main(){ctx:=context.Background();r:=wazero.NewRuntime(ctx);wasi_snapshot_preview1.MustInstantiate(ctx,r)
b,_:=os.ReadFile(os.Args[1]);cfg:=wazero.NewModuleConfig().WithStdout(os.Stdout).WithStderr(os.Stderr).WithArgs(os.Args[1:]...)
_,err:=r.InstantiateWithConfig(ctx,b,cfg);if err!=nil{println(err.Error())}}
