<#
.SYNOPSIS
  Cài hatang-agent từ gói ngoại tuyến này / Install hatang-agent from this offline bundle.

.DESCRIPTION
  Chuột phải vào install.cmd -> "Run as administrator", hoặc trong PowerShell (Admin):
      powershell -ExecutionPolicy Bypass -File install.ps1
  Không có tham số thì chương trình hỏi địa chỉ máy chủ tỉnh và mã đăng ký.

  Installs into "$env:ProgramFiles\hatang" (a Python venv built from wheels\, no
  network), enrolls the agent with the collector (config and credential under
  "$env:ProgramData\hatang", readable by SYSTEM and Administrators only), shows
  "hatang-agent check", then registers and starts the Windows service "hatang-agent"
  (automatic, delayed start; restarts on failure). Run it again to upgrade: the config
  and the spool are kept.

  Needs Python 3.11 or 3.12 (64-bit) installed for all users; when none is found and a
  python-3.1x.x-amd64.exe installer lies next to this script, it is installed silently.

.EXAMPLE
  .\install.ps1 -CollectorUrl https://10.10.0.10:8443 -Code ABCD-EFGH-JKLM-NPQR
.EXAMPLE
  .\install.ps1 -Role site-probe          # the office's site probe (needs Npcap)
#>
[CmdletBinding()]
param(
    [string]$CollectorUrl = '',
    [string]$Code = '',
    [ValidateSet('host', 'site-probe')]
    [string]$Role = 'host',
    [string]$CaFile = '',
    [string]$ConfigFile = '',
    [string]$InstallDir = (Join-Path $env:ProgramFiles 'hatang'),
    [string]$Python = '',
    [switch]$NoCheck
)
Set-StrictMode -Version Latest
$ErrorActionPreference = 'Stop'

$Bundle = $PSScriptRoot
$DataDir = Join-Path $env:ProgramData 'hatang'
$Config = Join-Path $DataDir 'agent.yaml'
$Venv = Join-Path $InstallDir 'venv'
$Agent = Join-Path $Venv 'Scripts\hatang-agent.exe'

function Say([string]$Text) { Write-Host $Text }

function Fail([string]$Text, [int]$ExitCode = 1) {
    Write-Host ''
    Write-Host "Lỗi / Error: $Text" -ForegroundColor Red
    exit $ExitCode
}

function Test-Admin {
    $identity = [Security.Principal.WindowsIdentity]::GetCurrent()
    $principal = New-Object Security.Principal.WindowsPrincipal($identity)
    return $principal.IsInRole([Security.Principal.WindowsBuiltInRole]::Administrator)
}

# The first output line of a program, or $null when it fails. Its error output is
# dropped: Windows PowerShell 5.1 turns redirected native stderr into errors, which
# 'Stop' would make fatal (py.exe says "No suitable Python runtime found" there).
function Get-FirstLine([string]$Exe, [string[]]$Arguments) {
    $ErrorActionPreference = 'Continue'
    $lines = @(& $Exe @Arguments 2>$null)
    if ($LASTEXITCODE -ne 0 -or $lines.Count -eq 0) { return $null }
    return ([string]$lines[0]).Trim()
}

# The real python.exe of a 64-bit Python 3.11 or 3.12, or $null.
function Test-Python([string]$Exe) {
    if (-not $Exe -or -not (Test-Path -LiteralPath $Exe)) { return $null }
    # No double quotes in arguments: Windows PowerShell 5.1 strips them for native programs.
    $probe = 'import struct,sys; ok=(3,11)<=sys.version_info[:2]<=(3,12) and struct.calcsize(''P'')==8; ok and print(sys.executable)'
    return (Get-FirstLine $Exe @('-c', $probe))
}

function Find-Python {
    if ($Python) { return (Test-Python $Python) }
    $launcher = Get-Command py.exe -ErrorAction SilentlyContinue
    if ($launcher) {
        foreach ($version in @('-3.12', '-3.11')) {
            $exe = Get-FirstLine $launcher.Source @($version, '-c', 'import sys; print(sys.executable)')
            $ok = Test-Python $exe
            if ($ok) { return $ok }
        }
    }
    foreach ($dir in @("$env:ProgramFiles\Python312", "$env:ProgramFiles\Python311")) {
        $ok = Test-Python (Join-Path $dir 'python.exe')
        if ($ok) { return $ok }
    }
    return $null
}

if (-not (Test-Admin)) {
    Fail 'cần quyền quản trị / administrator rights needed: right-click install.cmd -> "Run as administrator".' 2
}
if ($ConfigFile -and ($Code -or $CollectorUrl)) {
    Fail 'give either -ConfigFile or -CollectorUrl/-Code, not both' 2
}

Say '1/5 Tìm Python / Looking for Python 3.11 or 3.12 (64-bit) ...'
$PythonExe = Find-Python
if (-not $PythonExe) {
    $installer = Get-ChildItem -LiteralPath $Bundle -Filter 'python-3.1*-amd64.exe' -ErrorAction SilentlyContinue |
        Where-Object { $_.Name -match '^python-3\.1[12]\.\d+-amd64\.exe$' } |
        Sort-Object Name -Descending | Select-Object -First 1
    if ($installer) {
        Say "   cài / installing $($installer.Name) (a few minutes) ..."
        $arguments = '/quiet InstallAllUsers=1 Include_launcher=1 PrependPath=0 Include_test=0'
        $process = Start-Process -FilePath $installer.FullName -ArgumentList $arguments -Wait -PassThru
        if ($process.ExitCode -ne 0) { Fail "$($installer.Name) exited with code $($process.ExitCode)" }
        $PythonExe = Find-Python
    }
}
if (-not $PythonExe) {
    Fail ("không tìm thấy Python 3.11/3.12 64-bit / no 64-bit Python 3.11 or 3.12 found.`n" +
        "   Cài Python 3.12 (Windows installer, 64-bit), chọn 'Install for all users', rồi chạy lại.`n" +
        "   Install Python 3.12 (Windows installer, 64-bit) with 'Install for all users', then run this again.`n" +
        "   Or put python-3.12.x-amd64.exe next to install.ps1: it is then installed for you.") 2
}
Say "   $PythonExe"

Say "2/5 Cài chương trình / Installing the program into $InstallDir ..."
# An upgrade: the running service holds its DLLs (.pyd) open, and pip cannot replace them.
$existing = Get-Service -Name 'hatang-agent' -ErrorAction SilentlyContinue
if ($existing -and $existing.Status -ne 'Stopped') {
    Say '   dừng dịch vụ cũ / stopping the running service ...'
    Stop-Service -Name 'hatang-agent' -Force
}
if (-not (Test-Path -LiteralPath (Join-Path $Venv 'Scripts\python.exe'))) {
    & $PythonExe -m venv $Venv
    if ($LASTEXITCODE -ne 0) { Fail "python -m venv $Venv failed" }
}
$VenvPython = Join-Path $Venv 'Scripts\python.exe'
$Wheels = Join-Path $Bundle 'wheels'
function Install-Wheels([string]$Requirement) {
    & $VenvPython -m pip install -q --no-index --find-links $Wheels --upgrade $Requirement
    if ($LASTEXITCODE -ne 0) { Fail "pip could not install $Requirement from $Wheels (is the bundle complete?)" }
}
Install-Wheels 'hatang'

Say "3/5 Cấu hình / Configuration ($Config) ..."
New-Item -ItemType Directory -Force -Path $DataDir | Out-Null
# Only SYSTEM (the service) and Administrators may read the credential; by SID, because
# group names are translated on a Vietnamese Windows.
& icacls.exe $DataDir /inheritance:r /grant:r '*S-1-5-18:(OI)(CI)F' '*S-1-5-32-544:(OI)(CI)F' | Out-Null
if ($LASTEXITCODE -ne 0) { Fail "icacls $DataDir failed" }
if ($ConfigFile) {
    Copy-Item -LiteralPath $ConfigFile -Destination $Config -Force
} elseif ($Code -or $CollectorUrl -or -not (Test-Path -LiteralPath $Config)) {
    if (-not $CollectorUrl) { $CollectorUrl = Read-Host 'Địa chỉ máy chủ tỉnh / Collector URL (vd. https://10.10.0.10:8443)' }
    if (-not $Code) { $Code = Read-Host 'Mã đăng ký / Enrollment code (XXXX-XXXX-XXXX-XXXX)' }
    $enroll = @('enroll', '--config', $Config, '--collector', $CollectorUrl, '--code', $Code, '--role', $Role)
    if ($CaFile) { $enroll += @('--ca-file', $CaFile) }
    & $Agent @enroll
    switch ($LASTEXITCODE) {
        0 { }
        1 { Fail 'máy chủ từ chối mã đăng ký / the collector refused the code (wrong, used up or expired): ask the provincial IT centre for a new one' 1 }
        default { Fail "enrollment failed (exit $LASTEXITCODE): check the collector URL and the message above" $LASTEXITCODE }
    }
} else {
    Say '   giữ cấu hình cũ / keeping the existing configuration'
}
$ConfigRole = & $VenvPython -c 'import sys; from agent.config import load_config; print(load_config(sys.argv[1]).role)' $Config
if ($LASTEXITCODE -ne 0) { Fail "the configuration $Config is not valid (message above)" 2 }
if ((@($ConfigRole)[0]).Trim() -eq 'site-probe') {
    Install-Wheels 'hatang[site-probe]'
    if (-not (Test-Path -LiteralPath (Join-Path $env:SystemRoot 'System32\Npcap\wpcap.dll'))) {
        Say '   CHÚ Ý / NOTE: máy dò cần Npcap để quét LAN / the site probe needs Npcap for LAN discovery:'
        Say '   cài Npcap (chọn "WinPcap API-compatible mode"), rồi chạy lại install.ps1 / install Npcap, then run install.ps1 again.'
    }
}

if (-not $NoCheck) {
    Say '4/5 Kiểm tra / Checking (hatang-agent check) ...'
    & $Agent check --config $Config
    switch ($LASTEXITCODE) {
        0 { Say '   mọi mạng đều thông / every network is up' }
        1 { Say '   có mạng chưa thông (xem trên) / some network is down (see above): see docs\cai-dat.md' }
        default { Fail 'the configuration is not valid (message above)' 2 }
    }
}

Say '5/5 Dịch vụ / Service ...'
& $Agent service install --config $Config
if ($LASTEXITCODE -ne 0) { Fail "service install failed (exit $LASTEXITCODE)" }
Say ''
Say 'Xong / Done. Trạng thái / status:'
Say "   & '$Agent' service status"
Say "   Nhật ký / log: $DataDir\logs\agent.log"
